"""A batch of keys fanned out into provider calls: chunks of a provider's batch size, one
call per item at once, each failure its item's answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

__all__ = ["batched", "chunks", "each"]

K = TypeVar("K")
V = TypeVar("V")


def chunks(values: Sequence[K], size: int) -> list[list[K]]:
    """`values` in order, `size` at a time (the last chunk may be shorter)."""
    return [list(values[i : i + size]) for i in range(0, len(values), size)]


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
