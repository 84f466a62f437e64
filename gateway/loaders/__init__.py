"""Per-request DataLoaders over the entity cache, one per source operation."""

from gateway.loaders.entity import EntityLoader, Loaders

__all__ = ["EntityLoader", "Loaders"]
