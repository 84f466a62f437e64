"""A rate limiter per provider, shared by every replica through Redis (DESIGN sections 8, 10).

Providers state their limits as "N calls in any window of P seconds" (Stripe 25/1s,
HubSpot 100/10s), so the limiter keeps exactly that promise: a sliding-window log of
reserved slots. A caller reserves the earliest slot that keeps every window of `per`
seconds at or under `calls`, then sleeps until it. Slots are handed out in order, so
callers queue fairly, and a burst of up to `calls` goes out at once.

With Redis the log is one sorted set per provider, read and written by one Lua script
(atomic across replicas) that takes the time from Redis, so the replicas' own clocks never
need to agree. Without Redis, or while Redis fails, the same log lives in the process:
each replica then keeps the limit on its own, which over-spends by the replica count for
the length of an outage but never stops the gateway from answering.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from gateway.redis_client import RedisClient, by_slot, concurrently
from gateway.settings import RateLimit
from gateway.turns import TurnBatch

__all__ = ["LATENCY_MARGIN", "RateLimiter", "SlotUnavailable"]

log = logging.getLogger("gateway.upstream")

# Times are integer microseconds: Lua numbers are doubles (exact to 2**53, far beyond any
# Unix time in microseconds) and Redis truncates a Lua float reply to an integer. Writing
# after TIME needs scripts replicated by effect: the default since Redis 5, the only mode
# since 7 (an older Redis rejects the script and the limiter stays in-process).
# One call reserves slots for every caller of one event-loop turn, of every provider, in
# order: KEYS are the providers' logs; ARGV holds, per caller, the index of its key, that
# provider's calls and per, its max wait and a member; the reply a (granted, wait) pair
# each. A slot too far away for its caller is refused and not reserved.
_RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local out = {}
local longest = {}
local window = {}
for i = 1, #ARGV, 5 do
  local k = tonumber(ARGV[i])
  local key = KEYS[k]
  local calls = tonumber(ARGV[i + 1])
  local per = tonumber(ARGV[i + 2])
  local max_wait = tonumber(ARGV[i + 3])
  if window[k] == nil then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - per)
    window[k] = per
    longest[k] = -1
  end
  local count = redis.call('ZCARD', key)
  local slot = now
  if count >= calls then
    local bound = redis.call('ZRANGE', key, count - calls, count - calls, 'WITHSCORES')
    slot = math.max(now, tonumber(bound[2]) + per)
  end
  local wait = slot - now
  if wait > max_wait then
    out[#out + 1] = 0
  else
    redis.call('ZADD', key, slot, ARGV[i + 4])
    longest[k] = math.max(longest[k], wait)
    out[#out + 1] = 1
  end
  out[#out + 1] = wait
end
for k, wait in pairs(longest) do
  if wait >= 0 then
    redis.call('PEXPIRE', KEYS[k], math.ceil((wait + window[k]) / 1000))
  end
end
return out
"""

# The limiter spaces the moments calls leave; the provider counts the moments they arrive.
# Calls leaving together in a burst reach the provider spread over a few milliseconds, so
# a window of exactly `per` seconds lets the edge of one burst and the start of the next
# land in the same provider window. Widening the window by more than that spread keeps
# the provider's count within the limit, at the cost of a few percent of throughput on
# one-second windows and nothing measurable on longer ones.
LATENCY_MARGIN = 0.05

# Bounds one Redis round trip, so a Redis that hangs costs a call this much and no more.
_REDIS_TIMEOUT = 0.5
# After a Redis failure the limiter stays in-process this long before trying Redis again,
# so an outage does not add a failed connection attempt to every provider call.
_REDIS_RETRY_INTERVAL = 5.0


class _SharedLogs:
    """The providers' logs in one Redis: every reservation of one event-loop turn, whatever
    its provider, goes out in one script call (a portal page's billing and help-desk calls
    leave together, and neither waits behind the other's round trip)."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self.script: AsyncScript = redis.register_script(_RESERVE)
        self._turn: TurnBatch[tuple[str, int, int, int], float] = TurnBatch(self._reserve)

    async def reserve(self, key: str, calls: int, per: int, max_wait: int) -> float:
        """The wait in seconds for a slot of the log `key`, negative when refused; raises
        what Redis raised."""
        return await self._turn.submit((key, calls, per, max_wait))

    async def _reserve(self, asks: list[tuple[str, int, int, int]]) -> list[float]:
        # one script call per slot (on one node: one call); each ask with its position
        groups = by_slot(((ask[0], (n, ask)) for n, ask in enumerate(asks)), self.redis)
        async with asyncio.timeout(_REDIS_TIMEOUT):
            replies = await concurrently([self._reserve_in_slot(group) for group in groups])
        waits = [0.0] * len(asks)
        for group, reply in zip(groups, replies, strict=True):
            for (_key, (n, _ask)), wait in zip(group, reply, strict=True):
                waits[n] = wait
        return waits

    async def _reserve_in_slot(
        self, group: list[tuple[str, tuple[int, tuple[str, int, int, int]]]]
    ) -> list[float]:
        keys: dict[str, int] = {}
        args: list[int | str] = []
        for key, (_n, (_key, calls, per, max_wait)) in group:
            index = keys.setdefault(key, len(keys) + 1)
            args += [index, calls, per, max_wait, uuid.uuid4().hex]
        reply = await self.script(keys=list(keys), args=args)
        # a refused slot travels as a negative wait: SlotUnavailable for its caller
        return [
            (1 if int(reply[i]) else -1) * int(reply[i + 1]) / 1_000_000
            for i in range(0, 2 * len(group), 2)
        ]


# One per Redis client (so per event loop): the limiters of every provider share it.
_shared: weakref.WeakKeyDictionary[RedisClient, _SharedLogs] = weakref.WeakKeyDictionary()


def _logs_in(redis: RedisClient) -> _SharedLogs:
    logs = _shared.get(redis)
    if logs is None:
        logs = _shared[redis] = _SharedLogs(redis)
    return logs


class SlotUnavailable(Exception):
    """The next free slot is further away than the caller can wait; nothing was reserved."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"next slot in {wait:.3f}s")
        self.wait = wait


class _LocalWindow:
    """The sliding-window log in process memory (same algorithm as the Lua script)."""

    def __init__(self, calls: int, per: float) -> None:
        self._calls = calls
        self._per = per
        self._slots: deque[float] = deque()

    def reserve(self, now: float, max_wait: float) -> float:
        # No await inside: within one event loop this runs atomically.
        slots = self._slots
        while slots and slots[0] <= now - self._per:
            slots.popleft()
        slot = now
        if len(slots) >= self._calls:
            slot = max(now, slots[-self._calls] + self._per)
        wait = slot - now
        if wait > max_wait:
            raise SlotUnavailable(wait)
        slots.append(slot)
        return wait


class RateLimiter:
    """At most `limit.calls` calls in any `limit.per` seconds for one provider."""

    def __init__(
        self,
        source: str,
        limit: RateLimit,
        *,
        key: str,
        redis: RedisClient | None = None,
        margin: float = LATENCY_MARGIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`key` is the Redis key of the shared log; `redis` None keeps the log in-process.

        `margin` seconds are added to the window (see LATENCY_MARGIN).
        """
        if limit.calls < 1 or limit.per <= 0:
            raise ValueError(f"rate limit of {source} must allow at least one call per period")
        self.source = source
        self.limit = limit
        self._key = key
        self._redis = redis
        self._clock = clock
        # The window the slots are spaced by: the provider's, widened by the margin.
        self._window = limit.per + max(margin, 0.0)
        self._local = _LocalWindow(limit.calls, self._window)
        # callers of one event-loop turn, of every provider, share one script call
        self._logs: _SharedLogs | None = _logs_in(redis) if redis is not None else None
        self._falling_back = False
        self._next_redis_try = 0.0

    @property
    def shared(self) -> bool:
        """Whether the limit is currently kept in Redis (False while falling back)."""
        return self._redis is not None and not self._falling_back

    async def reserve(self, max_wait: float) -> float:
        """Reserve the next slot; return the seconds to wait before using it.

        Raises SlotUnavailable, reserving nothing, when that slot is more than `max_wait`
        seconds away.
        """
        if self._logs is not None and self._clock() >= self._next_redis_try:
            if self._falling_back:
                # One caller at a time finds out whether Redis is back; the others stay
                # in-process meanwhile instead of all waiting on a dead connection.
                self._next_redis_try = self._clock() + _REDIS_RETRY_INTERVAL
            shared = await self._reserve_shared(max_wait)
            if shared is not None:
                return shared
        return self._local.reserve(self._clock(), max_wait)

    async def _reserve_shared(self, max_wait: float) -> float | None:
        """The wait from the Redis log, or None when Redis failed (the caller goes local).

        Callers of one event-loop turn share one script call: a page over fifty customers
        reserves its fifty calls, and its other providers' calls, in one round trip.
        """
        assert self._logs is not None
        try:
            wait = await self._logs.reserve(
                self._key,
                self.limit.calls,
                round(self._window * 1_000_000),
                round(max(max_wait, 0.0) * 1_000_000),
            )
        except (RedisError, OSError, TimeoutError, IndexError, TypeError, ValueError) as exc:
            if not self._falling_back:
                log.warning(
                    "rate limiter for %s falls back to in-process: Redis failed",
                    self.source,
                    extra={"provider": self.source, "error": type(exc).__name__},
                )
            self._falling_back = True
            self._next_redis_try = self._clock() + _REDIS_RETRY_INTERVAL
            return None
        if self._falling_back:
            log.info(
                "rate limiter for %s is shared through Redis again",
                self.source,
                extra={"provider": self.source},
            )
            self._falling_back = False
            self._next_redis_try = 0.0
        if wait < 0:
            raise SlotUnavailable(-wait)
        return wait
