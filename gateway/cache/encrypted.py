"""A cache backend whose values are sealed (gateway/encryption.py) before they reach Redis.

Every value written through it — entities and their stale copies, links, whole responses,
idempotency records, webhook and notification claims, persisted queries — is sealed with
its full key as associated data, and opened on the way back. A value that does not open
(sealed under a retired key, tampered with, copied from another key) is a miss, counted
in `gateway_cache_undecryptable_total{kind}` and logged without the value: never served,
never an error. Counters (rate limits) and tag sets hold no customer data and stay as
they are; keys are the callers' business (they hold ids and pseudonyms, never emails).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.cache.base import CacheBackend, CacheStatus, Entry
from gateway.encryption import DataCipher, Undecryptable
from gateway.observability import CACHE_UNDECRYPTABLE, labelled

__all__ = ["EncryptedCache"]

log = logging.getLogger(__name__)


class EncryptedCache:
    """`CacheBackend` sealing every value of `backend` under `cipher`."""

    def __init__(self, backend: CacheBackend, cipher: DataCipher, *, prefix: str) -> None:
        self.backend = backend
        self.cipher = cipher
        self.prefix = prefix

    @property
    def client(self) -> Any:
        """The wrapped backend's Redis client (rate limits and OAuth grants share its pool)."""
        return getattr(self.backend, "client", None)

    @property
    def status(self) -> CacheStatus:
        return self.backend.status

    def _kind(self, key: str) -> str:
        # `{prefix}{kind}:...`: crm, billing, helpdesk, files, resp, idem, webhook, ...
        return key[len(self.prefix) :].partition(":")[0] or "other"

    def _open(self, key: str, sealed: bytes | None) -> bytes | None:
        if sealed is None:
            return None
        try:
            return self.cipher.open(sealed, key.encode())
        except Undecryptable as why:
            kind = self._kind(key)
            labelled(CACHE_UNDECRYPTABLE, kind).inc()
            log.warning(
                "a cached value did not decrypt and was read as a miss: %s",
                why,
                extra={"kind": kind},
            )
            return None

    def _seal(self, key: str, value: bytes) -> bytes:
        return self.cipher.seal(value, key.encode())

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        values = await self.backend.get_many(keys)
        return [self._open(key, value) for key, value in zip(keys, values, strict=True)]

    async def set_many(self, entries: Sequence[Entry], tags: Mapping[str, Sequence[str]]) -> None:
        await self.backend.set_many(
            [(key, self._seal(key, value), ttl) for key, value, ttl in entries], tags
        )

    async def count_and_get(
        self, counters: Sequence[tuple[str, int]], key: str | None
    ) -> tuple[list[int], bytes | None]:
        counts, value = await self.backend.count_and_get(counters, key)
        return counts, (self._open(key, value) if key is not None else None)

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        return await self.backend.add(key, self._seal(key, value), ttl)

    async def delete(self, keys: Sequence[str]) -> None:
        await self.backend.delete(keys)

    async def drop_tags(self, tags: Sequence[str]) -> int:
        return await self.backend.drop_tags(tags)

    async def erase(self, tags: Sequence[str], keys: Sequence[str]) -> list[str]:
        return await self.backend.erase(tags, keys)

    async def ping(self) -> bool:
        return await self.backend.ping()

    async def aclose(self) -> None:
        await self.backend.aclose()
