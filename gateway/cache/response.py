"""Whole-response cache per viewer, in front of GraphQL execution.

An entry is the JSON of one query's answer, keyed by the viewer's scope and a hash of
(document, variables, operation name). It is tagged with every entity the loaders touched,
in the same tag sets the entity cache uses (`{prefix}tag:{tag}`), so one `drop_tags` —
from a webhook, a mutation or a purge — drops the entity entries and every cached page
holding that entity, for every viewer. Its TTL is the smallest TTL of the kinds touched.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Iterable
from typing import Any

import orjson

from gateway.cache.base import CacheBackend

__all__ = ["CachedResponse", "ResponseCache"]

_HEADER = struct.Struct("!d16s")  # stored_at (unix time), etag digest


class CachedResponse:
    """One stored answer; `ttl` is set on an entry about to be stored (see ResponseCache.entry)."""

    __slots__ = ("body", "etag", "stored_at", "ttl")

    def __init__(self, body: bytes, etag: str, stored_at: float, ttl: int = 0) -> None:
        self.body = body
        self.etag = etag
        self.stored_at = stored_at
        self.ttl = ttl

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.stored_at)


class ResponseCache:
    def __init__(
        self, backend: CacheBackend, *, prefix: str, ttls: dict[str, int], max_bytes: int
    ) -> None:
        self.backend = backend
        self.prefix = prefix
        self.ttls = ttls
        self.max_bytes = max_bytes
        # Entries on their way to the backend (stored after their answer went out): a
        # request that reads one meanwhile gets it, not a miss (see `landing`).
        self._landing: dict[str, CachedResponse] = {}

    def key(
        self, scope: str, document: str, variables: dict[str, Any] | None, operation: str | None
    ) -> str:
        """The entry of one viewer scope, document digest (sha256), variables and operation."""
        digest = hashlib.blake2b(digest_size=20)
        digest.update(document.encode())
        digest.update(b"\x00")
        if variables:
            digest.update(orjson.dumps(variables, option=orjson.OPT_SORT_KEYS))
        digest.update(b"\x00")
        digest.update((operation or "").encode())
        return f"{self.prefix}resp:{scope}:{digest.hexdigest()}"

    async def get(self, key: str) -> CachedResponse | None:
        [data] = await self.backend.get_many([key])
        return self.parse(data)

    @staticmethod
    def parse(data: bytes | None) -> CachedResponse | None:
        if data is None or len(data) < _HEADER.size:
            return None
        stored_at, etag = _HEADER.unpack_from(data)
        return CachedResponse(data[_HEADER.size :], f'"{etag.hex()}"', stored_at)

    def ttl_for(self, kinds: Iterable[str]) -> int | None:
        ttls = [self.ttls[k] for k in kinds if k in self.ttls]
        return min(ttls) if ttls else None

    def entry(self, body: bytes, kinds: Iterable[str]) -> CachedResponse | None:
        """The entry an answer would be stored as; None when it is not cacheable (too big,
        touched nothing). Made before the answer goes out, for its ETag; `store` writes it."""
        ttl = self.ttl_for(kinds)
        if ttl is None or ttl <= 0 or len(body) > self.max_bytes:
            return None
        etag = hashlib.blake2b(body, digest_size=16).digest()
        return CachedResponse(body, f'"{etag.hex()}"', time.time(), ttl)

    async def store(self, key: str, entry: CachedResponse, tags: Iterable[str]) -> None:
        header = _HEADER.pack(entry.stored_at, bytes.fromhex(entry.etag[1:-1]))
        self._landing[key] = entry
        try:
            await self.backend.set_many(
                [(key, header + entry.body, entry.ttl)],
                {f"{self.prefix}tag:{tag}": [key] for tag in tags},
            )
        finally:
            if self._landing.get(key) is entry:
                del self._landing[key]

    def landing(self, key: str) -> CachedResponse | None:
        """The entry being stored under `key` by this process, if any.

        A client that asks again the moment its answer arrives can be read before the
        write of that answer lands (on another connection of the pool): it gets the entry
        from here. A purge waits for such writes (EntityCache.guarded), so it never finds
        one here that it should have dropped."""
        return self._landing.get(key)

    async def delete(self, key: str) -> None:
        await self.backend.delete([key])


def with_cache_extension(body: bytes, hit: bool, age: float) -> bytes:
    """Add `extensions.cache` to a stored answer (which never has extensions of its own)."""
    extension = orjson.dumps({"cache": {"hit": hit, "age": round(age, 3)}})
    return body[:-1] + b',"extensions":' + extension + b"}"
