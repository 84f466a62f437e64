"""The in-process cache backend: the embedded default when REDIS_URL is unset."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from gateway.cache.base import CacheStatus, Entry

__all__ = ["MemoryCache"]


class MemoryCache:
    """A dict with expiry and tag sets. Bounded: the oldest entries go first past `max_entries`."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._data: dict[str, tuple[float, bytes]] = {}
        self._tags: dict[str, set[str]] = {}
        self._counters: dict[str, tuple[float, int]] = {}  # key -> (expires, count)
        self._max = max_entries

    @property
    def status(self) -> CacheStatus:
        return "ok"

    def _live(self, key: str, now: float) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= now:
            del self._data[key]
            return None
        return item[1]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        return [self._live(key, now) for key in keys]

    async def set_many(self, entries: Sequence[Entry], tags: Mapping[str, Sequence[str]]) -> None:
        now = time.monotonic()
        for key, value, ttl in entries:
            self._data.pop(key, None)  # re-insert at the end: dict order is age order
            self._data[key] = (now + ttl, value)
        for tag, keys in tags.items():
            self._tags.setdefault(tag, set()).update(keys)
        if len(self._data) > self._max:
            while len(self._data) > self._max:
                del self._data[next(iter(self._data))]
            self._prune_tags()

    async def count_and_get(
        self, counters: Sequence[tuple[str, int]], key: str | None
    ) -> tuple[list[int], bytes | None]:
        now = time.monotonic()
        counts = []
        for counter, ttl in counters:
            item = self._counters.get(counter)
            if item is None or item[0] <= now:
                item = (now + ttl, 0)
            item = (item[0], item[1] + 1)
            self._counters[counter] = item
            counts.append(item[1])
        if len(self._counters) > self._max:
            self._counters = {k: v for k, v in self._counters.items() if v[0] > now}
        return counts, (self._live(key, now) if key is not None else None)

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        if self._live(key, time.monotonic()) is not None:
            return False
        await self.set_many([(key, value, ttl)], {})
        return True

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def drop_tags(self, tags: Sequence[str]) -> int:
        now = time.monotonic()
        dropped = 0
        for tag in tags:
            for key in self._tags.pop(tag, ()):
                item = self._data.pop(key, None)
                if item is not None and item[0] > now:
                    dropped += 1
        return dropped

    async def erase(self, tags: Sequence[str], keys: Sequence[str]) -> list[str]:
        now = time.monotonic()
        removed: list[str] = []
        wanted = [member for tag in tags for member in self._tags.pop(tag, ())] + list(keys)
        for key in dict.fromkeys(wanted):
            item = self._data.pop(key, None)
            if item is not None and item[0] > now:
                removed.append(key)
        return removed

    def _prune_tags(self) -> None:
        """Forget tag members that are gone, so tag sets stay bounded by the live entries."""
        for tag in list(self._tags):
            live = {key for key in self._tags[tag] if key in self._data}
            if live:
                self._tags[tag] = live
            else:
                del self._tags[tag]

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._data.clear()
        self._tags.clear()
