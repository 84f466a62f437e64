"""Cross-request cache: the backend protocol, Redis and in-process backends, the entity cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.cache.base import CacheBackend
    from gateway.cache.entity import EntityCache
    from gateway.settings import Settings

__all__ = ["build_cache_backend", "build_entity_cache"]


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


def build_entity_cache(settings: Settings, backend: CacheBackend) -> EntityCache:
    """The entity cache over `backend`, with the configured TTLs."""
    from gateway.cache.entity import EntityCache

    return EntityCache(
        backend,
        prefix=settings.cache_prefix,
        ttls={k: settings.ttl(k) for k in ("crm", "billing", "helpdesk", "files")},
        stale_ttl=settings.cache_stale_ttl,
        cipher=settings.data_cipher(),
        # a request reads through a few waves of provider calls, each within its deadline
        settle=3 * settings.upstream_timeout,
    )
