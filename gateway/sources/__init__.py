"""Provider adapters behind the protocols of base.py."""
