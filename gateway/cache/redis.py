"""The Redis cache backend: shared by every replica, and never the reason a request fails.

Keys arrive complete (prefix included) and values are opaque bytes (DESIGN sections 8, 11).
A tag is a Redis set at `{prefix}tag:{tag}` holding the keys written under it; it expires
with the longest-lived of those keys, so tag sets stay bounded.

On a Redis Cluster (`redis+cluster://`, gateway/redis_client.py) the reads of one turn go
out as one MGET per slot, pipelined per node, and every script runs once per slot with the
keys of that slot, the calls of one turn in one pipeline (a round trip per node): entries
and tag sets are written where their keys live, a tag set holds names, not keys, so its
members may live anywhere. Dropping a tag reads and deletes the set in one script on its
node, then deletes the members wherever they live.

Redis trouble (refused, reset, slow, out of memory, read-only after a failover) never
raises: reads answer misses, writes are dropped, `CACHE_ERRORS` counts the failure and
`status` turns "degraded". For `retry_interval` seconds after a failure the backend does not
touch the network at all, so an outage costs a request nothing; then the next call tries
Redis again, and its success turns `status` back to "ok".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT

from gateway.cache.base import CacheStatus, Entry
from gateway.observability import CACHE_ERRORS
from gateway.redis_client import (
    RedisClient,
    by_slot,
    cluster_url,
    connect,
    is_cluster,
)
from gateway.turns import TurnBatch

__all__ = ["RedisCache"]

log = logging.getLogger(__name__)

# Builtin TimeoutError is an OSError; redis-py's own errors all derive from RedisError.
_FAILURES = (RedisError, OSError)

# Atomic per call, so no key can join a tag between reading its members and deleting them.
# Members are deleted in slices: unpack() of a very large set would overflow Lua's stack.
# KEYS: the counters, then (optionally) one key to read; ARGV: the number of counters, then
# each counter's ttl. A missing value ends the reply array (Lua nil), which reads as a miss.
_COUNT_AND_GET = """
local n = tonumber(ARGV[1])
local out = {}
for i = 1, n do
  local count = redis.call('INCR', KEYS[i])
  if count == 1 then redis.call('EXPIRE', KEYS[i], ARGV[i + 1]) end
  out[i] = count
end
if #KEYS > n then
  out[n + 1] = redis.call('GET', KEYS[n + 1])
end
return out
"""

_DROP_TAGS = """
local dropped = 0
for _, tag in ipairs(KEYS) do
  local members = redis.call('SMEMBERS', tag)
  for first = 1, #members, 1000 do
    local last = math.min(first + 999, #members)
    dropped = dropped + redis.call('UNLINK', unpack(members, first, last))
  end
  redis.call('UNLINK', tag)
end
return dropped
"""

# KEYS: the tag sets (ARGV[1] of them), then plain keys; answers the keys that existed.
_ERASE = """
local removed = {}
local seen = {}
local function drop(key)
  if not seen[key] then
    seen[key] = true
    if redis.call('UNLINK', key) == 1 then removed[#removed + 1] = key end
  end
end
local tags = tonumber(ARGV[1])
for i = 1, tags do
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[i])) do drop(member) end
  redis.call('UNLINK', KEYS[i])
end
for i = tags + 1, #KEYS do drop(KEYS[i]) end
return removed
"""

# On a cluster, where a tag's members live in other slots: KEYS are tag sets of one slot,
# each read and deleted at once; answers their members, for the caller to delete.
_TAKE_MEMBERS = """
local members = {}
for _, tag in ipairs(KEYS) do
  for _, member in ipairs(redis.call('SMEMBERS', tag)) do members[#members + 1] = member end
  redis.call('UNLINK', tag)
end
return members
"""

# The writes of one event-loop turn as one command: a pipeline of SET, SADD and EXPIRE
# costs redis-py a packed command and a parsed reply each (a cold staff page of 50: ~1,200
# commands, ~18 ms of CPU), the script one of each (docs/design.md section 12).
# KEYS: the entries' keys, then the tag sets'. ARGV: the number of entries; each entry's
# value and ttl; then for each tag set its ttl, its member count and the members (added in
# slices of 1,000, as unpack() of more could overflow Lua's stack). A tag set expires no
# earlier than its longest-lived member: EXPIRE NX sets a first expiry, GT only extends it.
_SET_MANY = """
local n = tonumber(ARGV[1])
local a = 2
for k = 1, n do
  redis.call('SET', KEYS[k], ARGV[a], 'EX', ARGV[a + 1])
  a = a + 2
end
for t = n + 1, #KEYS do
  local ttl = ARGV[a]
  local count = tonumber(ARGV[a + 1])
  a = a + 2
  for first = a, a + count - 1, 1000 do
    redis.call('SADD', KEYS[t], unpack(ARGV, first, math.min(first + 999, a + count - 1)))
  end
  a = a + count
  redis.call('EXPIRE', KEYS[t], ttl, 'NX')
  redis.call('EXPIRE', KEYS[t], ttl, 'GT')
end
return n
"""

# one script call: its keys and its arguments
_Call = tuple[list[str], list[EncodableT]]

# one set_many call: its live entries and its tag memberships
_Write = tuple[list[Entry], Mapping[str, Sequence[str]]]


class RedisCache:
    """`CacheBackend` over redis.asyncio with short timeouts and a circuit breaker."""

    def __init__(
        self,
        url: str,
        *,
        client: RedisClient | None = None,
        socket_timeout: float = 0.25,
        retry_interval: float = 1.0,
        max_connections: int = 100,
    ) -> None:
        """Connect lazily to `url`, or use `client` (whose owner closes it) when given.

        A `client` passed in must answer bytes (no `decode_responses`), as values are bytes.

        `socket_timeout` bounds both connecting and each reply; `max_connections` bounds
        the pool, and a call waits at most `socket_timeout` for a free connection. On a
        cluster (`redis+cluster://`) each node has a pool of `max_connections`.
        """
        self._own_pool: BlockingConnectionPool | None = None
        self._own_client: RedisClient | None = None
        if client is None and cluster_url(url) is not None:
            client = self._own_client = connect(
                url,
                max_connections=max_connections,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                # as below: no retry; a failed node's slots are looked up again (CLUSTER
                # SLOTS) by the first call after it, so a promoted replica is found
                retry=Retry(NoBackoff(), 0),
                protocol=2,
            )
        if client is None:
            # redis-py's own pool, through its public API only (DESIGN 12: what that costs)
            self._own_pool = BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=socket_timeout,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                # A retry would double the wait on a slow Redis, and a retried SET NX whose
                # first reply was lost would answer "already there" for our own write.
                retry=Retry(NoBackoff(), 0),
                # RESP2: no maintenance-notification handshake, so the pool checks a pooled
                # connection for a closed socket before reusing it and the first command
                # after a Redis restart goes out on a fresh connection.
                protocol=2,
            )
            client = redis.asyncio.Redis(connection_pool=self._own_pool)
        self._client: RedisClient = client
        self._cluster = is_cluster(client)
        self.retry_interval = retry_interval
        self._status: CacheStatus = "ok"
        self._skip_until = 0.0
        self._drop_tags_script = self._client.register_script(_DROP_TAGS)
        self._count_and_get_script = self._client.register_script(_COUNT_AND_GET)
        self._erase_script = self._client.register_script(_ERASE)
        self._set_many_script = self._client.register_script(_SET_MANY)
        self._take_members_script = self._client.register_script(_TAKE_MEMBERS)
        # the reads of one event-loop turn (every loader of a request, and of the other
        # requests in flight) go out as one MGET
        self._reads: TurnBatch[list[str], list[bytes | None]] = TurnBatch(self._mget)
        # and the writes of one turn (a request's fills, released together once it has
        # answered: a hundred on a cold staff page) go out as one pipeline
        self._writes: TurnBatch[_Write, None] = TurnBatch(self._write_turn)

    @property
    def client(self) -> RedisClient:
        """The redis.asyncio client, for other users of the same pool (rate limits, dedupe)."""
        return self._client

    @property
    def status(self) -> CacheStatus:
        """The backend's health: "degraded" from a failure until the next successful call."""
        return self._status

    def _skipping(self) -> bool:
        return self._status == "degraded" and time.monotonic() < self._skip_until

    def _failed(self, operation: str, exc: BaseException) -> None:
        CACHE_ERRORS.labels(operation).inc()
        self._skip_until = time.monotonic() + self.retry_interval
        if self._status != "degraded":
            self._status = "degraded"
            log.warning(
                "Redis cache unavailable, answering from providers: %s: %s",
                type(exc).__name__,
                exc,
                extra={"operation": operation},
            )

    def _succeeded(self) -> None:
        if self._status != "ok":
            self._status = "ok"
            log.info("Redis cache available again")

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """None for a miss, and all misses while Redis is away. Every get_many of one
        event-loop turn shares one MGET."""
        if not keys or self._skipping():
            return [None] * len(keys)
        return await self._reads.submit(list(keys))

    async def _mget(self, batches: list[list[str]]) -> list[list[bytes | None]]:
        keys = batches[0] if len(batches) == 1 else [key for batch in batches for key in batch]
        try:
            values: list[bytes | None]
            if isinstance(self._client, RedisCluster):
                # one MGET per slot, the MGETs of one node in one pipeline, nodes concurrently
                values = await self._client.mget_nonatomic(keys)
            else:
                values = await self._client.mget(keys)  # type: ignore[assignment]
        except _FAILURES as exc:
            self._failed("get_many", exc)
            return [[None] * len(batch) for batch in batches]
        self._succeeded()
        answers = []
        start = 0
        for batch in batches:
            answers.append(values[start : start + len(batch)])
            start += len(batch)
        return answers

    async def set_many(self, entries: Sequence[Entry], tags: Mapping[str, Sequence[str]]) -> None:
        """Write `entries` and tag memberships; dropped while Redis is away. Every set_many
        of one event-loop turn shares one pipeline.

        Each tag set expires no earlier than the longest-lived member written with it
        (EXPIRE NX sets a first expiry, EXPIRE GT only ever extends it). A member not among
        `entries` counts as living as long as the longest entry. An entry with a ttl under
        one second would hold nothing (and SET EX 0 is an error, not a delete), so it is
        skipped; a call left with no entries writes no tags, since a tag set is only ever
        written with an expiry.
        """
        live = [entry for entry in entries if entry[2] > 0]
        if not live or self._skipping():
            return
        await self._writes.submit((live, tags))

    async def _write_turn(self, writes: list[_Write]) -> list[None]:
        # (key, its script arguments, whether it is a tag set): entries before tag sets
        writes_of_keys: list[tuple[str, tuple[bool, list[EncodableT]]]] = []
        tag_writes: list[tuple[str, tuple[bool, list[EncodableT]]]] = []
        for live, tags in writes:
            ttls = {key: ttl for key, _value, ttl in live}
            longest = max(ttls.values())
            for key, value, ttl in live:
                writes_of_keys.append((key, (False, [value, ttl])))
            for tag, members in tags.items():
                if not members:
                    continue
                ttl = max(ttls.get(member, longest) for member in members)
                tag_writes.append((tag, (True, [ttl, len(members), *members])))
        calls: list[_Call] = []
        for group in by_slot(writes_of_keys + tag_writes, self._client):
            entries = [(key, args) for key, (is_tag, args) in group if not is_tag]
            tag_sets = [(key, args) for key, (is_tag, args) in group if is_tag]
            calls.append(
                (
                    [key for key, _args in entries + tag_sets],
                    [len(entries), *(a for _key, args in entries + tag_sets for a in args)],
                )
            )
        try:
            await self._run(self._set_many_script, calls)
        except _FAILURES as exc:
            self._failed("set_many", exc)
        else:
            self._succeeded()
        return [None] * len(writes)

    async def count_and_get(
        self, counters: Sequence[tuple[str, int]], key: str | None
    ) -> tuple[list[int], bytes | None]:
        """One EVALSHA: INCR each counter (EXPIRE on creation) and GET `key`."""
        if self._skipping():
            return [0] * len(counters), None
        # (key, the counter's ttl, or None for the key to read); one script call per slot
        asked: list[tuple[str, int | None]] = list(counters)
        if key is not None:
            asked.append((key, None))
        groups = by_slot(asked, self._client)
        calls: list[_Call] = []
        for group in groups:
            ttls = [ttl for _key, ttl in group if ttl is not None]
            reads = [name for name, ttl in group if ttl is None]
            calls.append(
                ([name for name, ttl in group if ttl is not None] + reads, [len(ttls), *ttls])
            )
        try:
            replies = await self._run(self._count_and_get_script, calls)
        except _FAILURES as exc:
            self._failed("count_and_get", exc)
            return [0] * len(counters), None
        self._succeeded()
        found: dict[str, int] = {}
        value = None
        for group, reply in zip(groups, replies, strict=True):
            counted = [name for name, ttl in group if ttl is not None]
            found.update(zip(counted, (int(n) for n in reply[: len(counted)]), strict=True))
            if len(counted) < len(group) and len(reply) > len(counted):
                value = reply[len(counted)]
        return [found[counter] for counter, _ttl in counters], value

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        """SET NX EX: True when the key was absent and is now set.

        While Redis is away this answers True without storing anything: the caller goes
        ahead (a webhook is handled, a mutation runs) rather than dropping the action as
        a duplicate, trading a rare double for never losing one.
        """
        if self._skipping():
            return True
        try:
            stored: Any = await self._client.set(key, value, ex=ttl, nx=True)
        except _FAILURES as exc:
            self._failed("add", exc)
            return True
        self._succeeded()
        return bool(stored)

    async def delete(self, keys: Sequence[str]) -> None:
        """UNLINK `keys` in one call; dropped while Redis is away."""
        if not keys or self._skipping():
            return
        try:
            await self._client.unlink(*keys)
        except _FAILURES as exc:
            self._failed("delete", exc)
            return
        self._succeeded()

    async def drop_tags(self, tags: Sequence[str]) -> int:
        """Delete every key recorded under these tag keys and the tag sets themselves.

        Atomic per call (one Lua script). Answers how many member keys were deleted, 0 while
        Redis is away.
        """
        if not tags or self._skipping():
            return 0
        try:
            dropped: Any
            if self._cluster:
                dropped = await self._client.unlink(*await self._take_members(tags))
            else:
                dropped = await self._drop_tags_script(keys=list(tags))
        except _FAILURES as exc:
            self._failed("drop_tags", exc)
            return 0
        self._succeeded()
        return int(dropped)

    async def erase(self, tags: Sequence[str], keys: Sequence[str]) -> list[str]:
        """One Lua script: UNLINK each member of `tags`, the tag sets and `keys`; answers the
        keys that existed (empty while Redis is away, as nothing could be erased)."""
        if (not tags and not keys) or self._skipping():
            return []
        try:
            removed: Any
            if self._cluster:
                removed = await self._unlink_each([*await self._take_members(tags), *keys])
            else:
                removed = await self._erase_script(keys=[*tags, *keys], args=[len(tags)])
        except _FAILURES as exc:
            self._failed("erase", exc)
            return []
        self._succeeded()
        return [key.decode() if isinstance(key, bytes) else str(key) for key in removed]

    async def _take_members(self, tags: Sequence[str]) -> list[str]:
        """On a cluster: each tag set's members, read and the set deleted by one script on its
        node (atomic per slot, so a key joining later starts a new set and is not lost); the
        member keys live in other slots and are deleted by the caller."""
        groups = by_slot(((tag, None) for tag in dict.fromkeys(tags)), self._client)
        replies = await self._run(
            self._take_members_script, [([tag for tag, _ in group], []) for group in groups]
        )
        members = {member for reply in replies for member in reply}
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    async def _run(self, script: AsyncScript, calls: list[_Call]) -> list[Any]:
        """`script` once per (keys, args): one call as it is; several (a cluster's slots) in
        one cluster pipeline, which sends each node its calls in one round trip, so a turn
        holds one connection per node however many slots it touches."""
        if len(calls) == 1:
            keys, args = calls[0]
            return [await script(keys=keys, args=args)]
        replies = await self._pipelined(script, calls)
        missing = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # a node that has not run it yet, or a replica promoted since: load it on every
            # primary and send again only the calls that did not run
            await self._client.script_load(script.script)
            again = await self._pipelined(script, [calls[n] for n in missing])
            for n, reply in zip(missing, again, strict=True):
                replies[n] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _pipelined(self, script: AsyncScript, calls: list[_Call]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await script(keys=keys, args=args, client=pipe)  # type: ignore[arg-type]
            return list(await pipe.execute(raise_on_error=False))

    async def _unlink_each(self, keys: Sequence[str]) -> list[str]:
        """UNLINK each key (pipelined per node); answers those that existed."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for key in unique:
                pipe.execute_command("UNLINK", key)
            replies: list[Any] = await pipe.execute()
        return [key for key, gone in zip(unique, replies, strict=True) if int(gone)]

    async def ping(self) -> bool:
        """Ask Redis now, even while calls are being skipped; the answer updates `status`.

        Readiness probes call this, so /readyz reports recovery as soon as Redis answers.
        """
        try:
            await self._client.ping()
        except _FAILURES as exc:
            self._failed("ping", exc)
            return False
        self._succeeded()
        return True

    async def aclose(self) -> None:
        """Close the connection pool this backend created; a client passed in stays open."""
        if self._own_pool is not None:
            await self._own_pool.disconnect()
        if self._own_client is not None:
            await self._own_client.aclose()
