"""A batch of keys fanned out into provider calls: chunks of a provider's batch size, one
call per item at once, each failure its item's answer; how many at once a provider's
budget allows."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from gateway.settings import Settings
from gateway.upstream import POOL_SIZE

__all__ = ["batched", "chunks", "each", "fanout_limit", "filled", "spread"]

K = TypeVar("K")
V = TypeVar("V")


def chunks(values: Sequence[K], size: int) -> list[list[K]]:
    """`values` in order, `size` at a time (the last chunk may be shorter)."""
    return [list(values[i : i + size]) for i in range(0, len(values), size)]


def spread(values: Sequence[K], size: int) -> list[list[K]]:
    """`values` in order, in as few chunks of at most `size` as `chunks` makes, but of
    even lengths (50 by 8: seven chunks of 7 or 8, not six of 8 and one of 2)."""
    if not values:
        return []
    count = math.ceil(len(values) / max(size, 1))
    base, extra = divmod(len(values), count)
    out: list[list[K]] = []
    start = 0
    for index in range(count):
        end = start + base + (1 if index < extra else 0)
        out.append(list(values[start:end]))
        start = end
    return out


def filled(answers: Sequence[V | None]) -> list[V]:
    """`answers` once every position has its answer (a batch answered in two passes)."""
    if any(answer is None for answer in answers):
        raise RuntimeError("a batch answer was left without a value")
    return [answer for answer in answers if answer is not None]


def fanout_limit(settings: Settings, provider: str) -> int:
    """Calls of one batch in flight at once: what the provider's shared budget
    (RATE_LIMIT_<PROVIDER>) allows in a second, at most the upstream pool, at least one.

    Stripe's 25 a second allows the whole pool (20); Zendesk's 700 a minute allows 11 a
    second; Xero's 60 a minute one. The rate limiter still decides when each call goes."""
    limit = settings.rate_limit(provider)
    per_second = limit.calls / limit.per if limit.per > 0 else limit.calls
    return max(1, min(POOL_SIZE, int(per_second)))


async def each(
    items: Sequence[K], fetch: Callable[[K], Awaitable[V]], concurrency: int | None = None
) -> list[V | Exception]:
    """`fetch` for every item, at most `concurrency` at a time (None: all at once, for an
    adapter whose own semaphore bounds the calls); a failure is its item's answer."""
    gate = asyncio.Semaphore(concurrency) if concurrency is not None else None

    async def one(item: K) -> V | Exception:
        try:
            if gate is None:
                return await fetch(item)
            async with gate:
                return await fetch(item)
        except Exception as exc:
            return exc

    return list(await asyncio.gather(*(one(item) for item in items)))


async def batched(
    keys: Sequence[K],
    size: int,
    fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]],
    concurrency: int | None = None,
) -> dict[K, V | Exception]:
    """`keys` fetched `size` at a time (see `each`), the answers merged by key: a failed
    call answers its exception for every key of its batch; a key a call leaves out is
    absent."""
    batches = chunks(keys, size)
    found: dict[K, V | Exception] = {}
    for batch, answer in zip(batches, await each(batches, fetch, concurrency), strict=True):
        if isinstance(answer, Exception):
            found.update(dict.fromkeys(batch, answer))
        else:
            found.update(answer)
    return found
