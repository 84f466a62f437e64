"""The outbox of provider writes (docs/design.md "The outbox"): a customer's ticket, profile
change or file deletion is kept and delivered later when its provider is unavailable."""

from gateway.outbox.intake import Outbox, new_write_id

__all__ = ["Outbox", "new_write_id"]
