"""Cross-request cache: the backend protocol, Redis and in-process backends, the entity cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.cache.base import CacheBackend
    from gateway.settings import Settings

__all__ = ["build_cache_backend"]


def build_cache_backend(settings: Settings) -> CacheBackend:
    """Redis with every value sealed (DATA_ENCRYPTION_KEYS) when REDIS_URL is set; else the
    in-process backend, whose values never leave the process."""
    if settings.redis_url:
        from gateway.cache.encrypted import EncryptedCache
        from gateway.cache.redis import RedisCache

        return EncryptedCache(
            RedisCache(settings.redis_url), settings.data_cipher(), prefix=settings.cache_prefix
        )
    from gateway.cache.memory import MemoryCache

    return MemoryCache()
