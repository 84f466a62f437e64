"""The byte-level cache backend protocol: Redis (redis.py) or in-process (memory.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

__all__ = ["CacheBackend", "CacheStatus", "Entry"]

CacheStatus = Literal["ok", "degraded", "disabled"]

# (full key, value, ttl seconds)
Entry = tuple[str, bytes, int]


class CacheBackend(Protocol):
    """Keys arrive complete (prefix included); values are opaque bytes.

    No method raises on backend trouble: reads answer misses, writes are dropped,
    and `status` turns "degraded" until the backend answers again.
    """

    @property
    def status(self) -> CacheStatus: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """One round trip (MGET) for many keys; None for a miss."""
        ...

    async def set_many(self, entries: Sequence[Entry], tags: Mapping[str, Sequence[str]]) -> None:
        """Write entries (pipelined) and add each key listed in `tags[tag]` to that tag's set."""
        ...

    async def count_and_get(
        self, counters: Sequence[tuple[str, int]], key: str | None
    ) -> tuple[list[int], bytes | None]:
        """Increment each counter (created with its ttl) and read `key`, in one round trip.

        What the incoming rate limit and the response cache share on the hot path; while the
        backend is away the counts are 0 (the limit fails open) and the value a miss.
        """
        ...

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        """SET NX: True when the key was absent and is now set."""
        ...

    async def delete(self, keys: Sequence[str]) -> None: ...

    async def drop_tags(self, tags: Sequence[str]) -> int:
        """Delete every key recorded under these tags; answers how many were deleted."""
        ...

    async def erase(self, tags: Sequence[str], keys: Sequence[str]) -> list[str]:
        """Delete every key recorded under these tags, the tag sets, and `keys`; answers
        the keys that existed (what erasing a customer reports). Empty while the backend
        is away."""
        ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...
