"""The entity cache between loaders and sources.

Keys are `{CACHE_PREFIX}{kind}:{entity}:{id}` (DESIGN section 11); the stale-if-error copy
of each is `{key}:stale`. One MGET per batch, one pipelined write, single flight per key
within the process, stale copies served when the provider fails.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from gateway.cache.base import CacheBackend, Entry
from gateway.cache.codec import Codec
from gateway.encryption import DataCipher
from gateway.observability import CACHE_REQUESTS, labelled

__all__ = ["INDEX_LAG", "DeferredWrites", "EntityCache", "Fetch", "StaleHit", "deferred_writes"]

# Seconds a provider's search index may lag behind it (docs/design.md section 11): Stripe
# documents "less than a minute" under normal operation; Zendesk indexes new and changed
# tickets within minutes. For this long after a change a customer's pages skip the index.
INDEX_LAG = {"billing": 90, "helpdesk": 300}

_NOTHING = object()  # not among the values being written

log = logging.getLogger(__name__)


class DeferredWrites:
    """The cache fills of one request, held until its answer has gone out.

    Building and sending a pipelined write costs the event loop ~1 ms (measured on a cold
    portal page): started at once, a fill of the CRM record ran between the CRM answer and
    the billing and help-desk calls, and the last fills before the answer was sent. Held,
    they start on `release()` (the endpoint calls it after the last byte), or earlier
    when a purge needs them done. Their values are read as cached meanwhile (`_landing`).
    """

    __slots__ = ("__weakref__", "_gate", "tasks")

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self._gate = asyncio.Event()

    def release(self) -> None:
        """Let the held writes start (at the loop's next turn); idempotent."""
        self._gate.set()

    async def hold(self, write: Coroutine[Any, Any, None]) -> None:
        try:
            await self._gate.wait()
        except BaseException:
            write.close()  # cancelled while held: never started, never awaited
            raise
        await write


# Where a request collects its cache fills: set, a fetched batch's values are handed out
# at once and written after the answer (see DeferredWrites; the request awaits the tasks
# once it has answered, gateway/graphql_http.py). Unset, each fill is awaited.
deferred_writes: contextvars.ContextVar[DeferredWrites | None] = contextvars.ContextVar(
    "deferred_writes", default=None
)

# How many purges `purged_since` remembers; a fill whose read began before the oldest of
# them is not written (a burst of webhooks beside a slow read costs a cache miss, no more).
_PURGES_KEPT = 1024

T = TypeVar("T")
Fetch = Callable[[list[str]], Awaitable[Sequence[Any]]]


class StaleHit:
    """Recorded for each id answered from its stale copy."""

    __slots__ = ("age", "id")

    def __init__(self, id: str, age: float) -> None:
        self.id = id
        self.age = age


class FetchAbandoned(Exception):
    """The request fetching a key went away before the provider answered."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"the {kind} fetch was abandoned; retry")


class EntityCache:
    def __init__(
        self,
        backend: CacheBackend,
        *,
        prefix: str,
        ttls: dict[str, int],
        stale_ttl: int,
        cipher: DataCipher,
        settle: float = 0.0,
    ) -> None:
        """`settle`: seconds after a purge (drop_tags) when it is repeated, long enough for
        any provider read in flight at the purge to have written its answer; 0: no repeat.
        `cipher` makes the pseudonyms that stand for personal data (emails) in keys."""
        self.backend = backend
        self.cipher = cipher
        self.prefix = prefix
        self.ttls = ttls
        self.stale_ttl = stale_ttl
        self.settle = settle
        # Purges made by this process so far, and the tags of the latest ones: a fill
        # (entity or whole response) tagged with a tag purged after its read began may hold
        # what the purge removed, and is not written (see purged_since).
        self.purges = 0
        self._recent: deque[tuple[int, frozenset[str]]] = deque(maxlen=_PURGES_KEPT)
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        # Writes past their purged_since check and not yet done: a purge waits for them
        self._writing: set[asyncio.Task[None]] = set()
        # The values of those writes, by key: a read meanwhile gets them, not a miss
        self._landing: dict[str, Any] = {}
        # Requests whose fills are held until their answer is out: a purge releases them
        # (weak: a request's own release does not need to be reported here)
        self._held: weakref.WeakSet[DeferredWrites] = weakref.WeakSet()
        self._repeats: dict[asyncio.Task[None], list[str]] = {}

    def key(self, kind: str, entity: str, id: str) -> str:
        return f"{self.prefix}{kind}:{entity}:{id}"

    def tag_key(self, tag: str) -> str:
        return f"{self.prefix}tag:{tag}"

    def pseudonym(self, value: str) -> str:
        """What stands for `value` (an email) in a key: never the value itself."""
        return self.cipher.pseudonym(value)

    async def load_many(
        self,
        kind: str,
        entity: str,
        ids: Sequence[str],
        fetch: Fetch,
        codec: Codec[T],
        *,
        tags: Callable[[str, T], Sequence[str]] | None = None,
        stale: list[StaleHit] | None = None,
    ) -> list[T | BaseException | None]:
        """Values for `ids` in order: cached ones, then one `fetch` call for the misses.

        `fetch` answers in id order (value, None or an Exception per id) or raises for the
        whole batch. Where it fails, an id with a stale copy gets that copy and a StaleHit
        is appended to `stale`; the others get the exception. A value this process is
        writing just after an answer (not landed in the backend yet) counts as cached.
        """
        keys = [self.key(kind, entity, id) for id in ids]
        raw = await self.backend.get_many(keys)
        results: list[Any] = [None] * len(ids)
        missing: list[int] = []
        for index, data in enumerate(raw):
            decoded = codec.decode(data) if data is not None else None
            if decoded is None:
                missing.append(index)
            else:
                results[index] = decoded[0]
        if missing and self._landing:
            # written just after an answer went out and not landed yet: as good as a hit
            still_missing = []
            for index in missing:
                value = self._landing.get(keys[index], _NOTHING)
                if value is _NOTHING:
                    still_missing.append(index)
                else:
                    results[index] = value
            missing = still_missing
        hits = len(ids) - len(missing)
        if hits:
            labelled(CACHE_REQUESTS, kind, "hit").inc(hits)
        if not missing:
            return results
        labelled(CACHE_REQUESTS, kind, "miss").inc(len(missing))

        # Single flight: wait for ids another request is already fetching; fetch the rest.
        waiting: list[tuple[int, asyncio.Future[Any]]] = []
        mine: list[int] = []
        loop = asyncio.get_running_loop()
        for index in missing:
            future = self._inflight.get(keys[index])
            if future is None:
                self._inflight[keys[index]] = loop.create_future()
                mine.append(index)
            else:
                waiting.append((index, future))

        if mine:
            await self._fetch_and_store(
                kind,
                [ids[i] for i in mine],
                [keys[i] for i in mine],
                fetch,
                codec,
                tags,
                stale,
                results,
                mine,
            )
        for index, future in waiting:
            try:
                results[index] = await asyncio.shield(future)
            except Exception as exc:
                results[index] = exc
        return results

    async def _fetch_and_store(
        self,
        kind: str,
        ids: list[str],
        keys: list[str],
        fetch: Fetch,
        codec: Codec[T],
        tags: Callable[[str, T], Sequence[str]] | None,
        stale: list[StaleHit] | None,
        results: list[Any],
        positions: list[int],
    ) -> None:
        completed = False
        purges = self.purges
        try:
            try:
                fetched: Sequence[Any] = await fetch(ids)
                if len(fetched) != len(ids):
                    raise RuntimeError(f"{kind} source answered {len(fetched)} for {len(ids)} ids")
            except Exception as exc:
                fetched = [exc] * len(ids)
            failed = [i for i, value in enumerate(fetched) if isinstance(value, Exception)]
            fresh_values = list(fetched)
            if failed:
                stale_raw = await self.backend.get_many([keys[i] + ":stale" for i in failed])
                now = time.time()
                for i, data in zip(failed, stale_raw, strict=True):
                    decoded = codec.decode(data) if data is not None else None
                    if decoded is not None:
                        fresh_values[i] = decoded[0]
                        if stale is not None:
                            stale.append(StaleHit(ids[i], max(0.0, now - decoded[1])))
                        labelled(CACHE_REQUESTS, kind, "stale").inc()
            for i, value in enumerate(fresh_values):
                results[positions[i]] = value
            completed = True
            # registered as landing in this step, before the requests waiting on this
            # fetch are answered: a read from now on finds the values, not a miss
            held = deferred_writes.get()
            write = self._fill(kind, ids, keys, fetched, codec, tags, purges, held)
            if write is not None:
                if held is None:
                    await write
                else:
                    held.tasks.append(write)
        finally:
            for i, key in enumerate(keys):
                future = self._inflight.pop(key, None)
                if future is not None and not future.done():
                    # a cancelled fetch must not answer "not found" to the requests waiting on it
                    value = results[positions[i]] if completed else FetchAbandoned(kind)
                    if isinstance(value, Exception):
                        future.set_exception(value)
                        future.exception()  # mark retrieved: no "never retrieved" warning
                    else:
                        future.set_result(value)

    def _fill(
        self,
        kind: str,
        ids: list[str],
        keys: list[str],
        fetched: Sequence[Any],
        codec: Codec[T],
        tags: Callable[[str, T], Sequence[str]] | None,
        read_at: int | None = None,
        held: DeferredWrites | None = None,
    ) -> asyncio.Task[None] | None:
        """Starts writing the fetched values; with `read_at` (the `purges` count when the
        read began), not those tagged with a tag purged since; with `held`, once it is
        released. Answers the write's task (None: nothing to write).

        Until the write lands, its values are read as cached (`_landing`) and a purge of
        this process waits for it; both are set here, in the step of the purge check.
        """
        ttl = self.ttls[kind]
        now = time.time()
        entries: list[Entry] = []
        tag_map: dict[str, list[str]] = {}
        written: dict[str, Any] = {}
        for id, key, value in zip(ids, keys, fetched, strict=True):
            if value is None or isinstance(value, Exception):
                continue
            value_tags = tags(id, value) if tags is not None else ()
            if read_at is not None and self.purged_since(read_at, value_tags):
                continue  # maybe what the purge removed
            data = codec.encode(value, now)
            written[key] = value
            entries.append((key, data, ttl))
            entries.append((key + ":stale", data, self.stale_ttl))
            for tag in value_tags:
                tag_map.setdefault(self.tag_key(tag), []).extend((key, key + ":stale"))
        if not entries:
            return None
        self._landing.update(written)
        write = self.backend.set_many(entries, tag_map)
        if held is not None:
            self._held.add(held)
            write = held.hold(write)
        task = self.guarded(write)

        def landed(_task: asyncio.Task[None]) -> None:  # done, failed or cancelled alike
            for key, value in written.items():
                if self._landing.get(key) is value:
                    del self._landing[key]

        task.add_done_callback(landed)
        return task

    def guarded(self, write: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Starts a cache write, as a task that a purge of this process waits for until it
        is done, failed or cancelled (see drop_tags).

        Call it in the same step as the purged_since check that allowed the write: between
        the two, no purge may begin.
        """
        task = asyncio.get_running_loop().create_task(write)
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)
        return task

    async def put(
        self, kind: str, entity: str, id: str, value: T, codec: Codec[T], tags: Sequence[str] = ()
    ) -> None:
        """Write one value through (after a successful provider write)."""
        key = self.key(kind, entity, id)
        write = self._fill(
            kind, [id], [key], [value], codec, (lambda _i, _v: tags) if tags else None
        )
        if write is not None:
            await write

    async def note_changes(self, tags: Sequence[str]) -> None:
        """Remember, for the search index's lag (INDEX_LAG), that the owners behind `tags`
        (`billing:{id}`, `helpdesk:{id}`) changed: their pages are then read from the
        provider's lists, never from an index that may not show the change yet."""
        entries: list[Entry] = [
            (self.key(kind, "changed", tag.partition(":")[2]), b"1", INDEX_LAG[kind])
            for tag in tags
            if (kind := tag.partition(":")[0]) in INDEX_LAG
        ]
        if entries:
            await self.backend.set_many(entries, {})

    async def changed_recently(self, kind: str, ids: Sequence[str]) -> set[str]:
        """Which of `ids` (billing or help-desk ids) changed within the index's lag."""
        if not ids:
            return set()
        found = await self.backend.get_many([self.key(kind, "changed", id) for id in ids])
        return {id for id, value in zip(ids, found, strict=True) if value is not None}

    async def invalidate(self, kind: str, entity: str, ids: Sequence[str]) -> None:
        keys = [self.key(kind, entity, id) for id in ids]
        await self.backend.delete(keys + [key + ":stale" for key in keys])

    async def drop_tags(self, tags: Sequence[str]) -> int:
        """Drops every entry, entity or whole response, tagged with one of `tags`.

        A provider read already in flight when the purge runs can still write the older
        answer after it: in this process such fills are skipped (`purged_since`), and fills
        being written are waited for; for the other replicas the purge runs again `settle`
        seconds later. So a purge is late by at most
        `settle` seconds on another replica, never by a whole TTL.
        """
        keys = await self._purge_begins(tags)
        dropped = await self.backend.drop_tags(keys)
        self._purge_repeats(keys)
        return dropped

    async def erase(self, tags: Sequence[str], keys: Sequence[str]) -> list[str]:
        """`drop_tags(tags)` and the untagged `keys` too, answering the keys that existed
        (what erasing a customer reports); purged as drop_tags purges."""
        tag_keys = await self._purge_begins(tags)
        for key in keys:
            self._landing.pop(key, None)
        removed = await self.backend.erase(tag_keys, keys)
        self._purge_repeats(tag_keys)
        return removed

    async def _purge_begins(self, tags: Sequence[str]) -> list[str]:
        """Marks a purge of `tags` and waits for the writes it must follow; answers the
        tag keys."""
        self.purges += 1
        self._recent.append((self.purges, frozenset(tags)))
        if self._writing:
            # Fills already past their check may reach the cache after the purge would:
            # it waits for them (fills not yet checked see the purge and are not written),
            # starting those held until their request's answer is out.
            for held in list(self._held):
                held.release()
            await asyncio.wait(list(self._writing))
        return [self.tag_key(tag) for tag in tags]

    def _purge_repeats(self, keys: list[str]) -> None:
        if self.settle > 0:
            repeat = asyncio.get_running_loop().create_task(self._drop_again(keys))
            self._repeats[repeat] = keys
            repeat.add_done_callback(self._repeats.pop)

    def purged_since(self, read_at: int, tags: Iterable[str]) -> bool:
        """Whether a purge of this process after `read_at` (a value of `purges`) dropped
        one of `tags`; True as well when those purges are too many to remember."""
        if read_at == self.purges:
            return False
        if self._recent[0][0] > read_at + 1:  # some purges since read_at are forgotten
            return True
        wanted = set(tags)
        for number, dropped in reversed(self._recent):
            if number <= read_at:
                return False
            if not dropped.isdisjoint(wanted):
                return True
        return False

    async def _drop_again(self, keys: list[str]) -> None:
        await asyncio.sleep(self.settle)
        try:
            await self.backend.drop_tags(keys)
        except Exception:
            log.exception("the repeated purge of %d tags failed", len(keys))

    async def aclose(self) -> None:
        """Runs the repeated purges still waiting now, before the backend closes."""
        waiting = list(self._repeats.items())
        for task, _keys in waiting:
            task.cancel()
        for _task, keys in waiting:
            await self.backend.drop_tags(keys)
