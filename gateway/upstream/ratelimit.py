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
from collections import deque
from collections.abc import Callable

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from gateway.settings import RateLimit
from gateway.turns import TurnBatch

__all__ = ["LATENCY_MARGIN", "RateLimiter", "SlotUnavailable"]

log = logging.getLogger("gateway.upstream")

# Times are integer microseconds: Lua numbers are doubles (exact to 2**53, far beyond any
# Unix time in microseconds) and Redis truncates a Lua float reply to an integer. Writing
# after TIME needs scripts replicated by effect: the default since Redis 5, the only mode
# since 7 (an older Redis rejects the script and the limiter stays in-process).
# One call reserves slots for every caller of one event-loop turn, in order: ARGV holds
# calls, per, then a (max wait, member) pair per caller; the reply a (granted, wait) pair
# each. A slot too far away for its caller is refused and not reserved.
_RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local calls = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - per)
local out = {}
local longest = -1
for i = 3, #ARGV, 2 do
  local max_wait = tonumber(ARGV[i])
  local count = redis.call('ZCARD', KEYS[1])
  local slot = now
  if count >= calls then
    local bound = redis.call('ZRANGE', KEYS[1], count - calls, count - calls, 'WITHSCORES')
    slot = math.max(now, tonumber(bound[2]) + per)
  end
  local wait = slot - now
  if wait > max_wait then
    out[#out + 1] = 0
  else
    redis.call('ZADD', KEYS[1], slot, ARGV[i + 1])
    longest = math.max(longest, wait)
    out[#out + 1] = 1
  end
  out[#out + 1] = wait
end
if longest >= 0 then
  redis.call('PEXPIRE', KEYS[1], math.ceil((longest + per) / 1000))
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
        redis: Redis | None = None,
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
        self._script: AsyncScript | None = (
            redis.register_script(_RESERVE) if redis is not None else None
        )
        self._falling_back = False
        self._next_redis_try = 0.0
        # callers of one event-loop turn share one script call
        self._turn: TurnBatch[float, float | None] = TurnBatch(self._reserve_turn)

    @property
    def shared(self) -> bool:
        """Whether the limit is currently kept in Redis (False while falling back)."""
        return self._redis is not None and not self._falling_back

    async def reserve(self, max_wait: float) -> float:
        """Reserve the next slot; return the seconds to wait before using it.

        Raises SlotUnavailable, reserving nothing, when that slot is more than `max_wait`
        seconds away.
        """
        script = self._script
        if script is not None and self._clock() >= self._next_redis_try:
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
        reserves its fifty calls in one round trip instead of fifty.
        """
        wait = await self._turn.submit(max(max_wait, 0.0))
        if wait is not None and wait < 0:
            raise SlotUnavailable(-wait)
        return wait

    async def _reserve_turn(self, max_waits: list[float]) -> list[float | None]:
        """One script call for a turn's callers: each one's wait, negative when refused;
        all None when Redis failed."""
        script = self._script
        assert script is not None
        args: list[int | str] = [self.limit.calls, round(self._window * 1_000_000)]
        for max_wait in max_waits:
            args += [round(max_wait * 1_000_000), uuid.uuid4().hex]
        answers: list[float | None]
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT):
                reply = await script(keys=[self._key], args=args)
            # a refused slot travels as a negative wait: SlotUnavailable for its caller
            answers = [
                (1 if int(reply[i]) else -1) * int(reply[i + 1]) / 1_000_000
                for i in range(0, 2 * len(max_waits), 2)
            ]
        except (RedisError, OSError, TimeoutError, IndexError, TypeError, ValueError) as exc:
            if not self._falling_back:
                log.warning(
                    "rate limiter for %s falls back to in-process: Redis failed",
                    self.source,
                    extra={"provider": self.source, "error": type(exc).__name__},
                )
            self._falling_back = True
            self._next_redis_try = self._clock() + _REDIS_RETRY_INTERVAL
            answers = [None] * len(max_waits)
        else:
            if self._falling_back:
                log.info(
                    "rate limiter for %s is shared through Redis again",
                    self.source,
                    extra={"provider": self.source},
                )
                self._falling_back = False
                self._next_redis_try = 0.0
        return answers
