"""Requests made during one event-loop turn, served by one call.

A page over many customers asks Redis many small things at once: the rate limiter a slot
per provider call, the entity cache a batch of keys per loader. Each asked on its own costs
a round trip (and, in redis-py, far more CPU than the command itself). A `TurnBatch`
collects what is submitted until the loop turn ends (the first submit schedules the flush
with `call_soon`, so everything already runnable joins), then serves all of it with one
`serve` call and hands each caller its own answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["TurnBatch"]

A = TypeVar("A")
R = TypeVar("R")


class TurnBatch(Generic[A, R]):
    """`await submit(item)` answers `serve(items)[i]` for the item's place in its turn.

    `serve` answers one result per item, in order. If it raises, every caller of that turn
    gets the exception. A caller cancelled while waiting leaves the others unaffected.
    """

    def __init__(self, serve: Callable[[list[A]], Awaitable[Sequence[R]]]) -> None:
        self._serve = serve
        self._pending: list[tuple[A, asyncio.Future[R]]] = []
        self._flushing: set[asyncio.Task[None]] = set()  # kept referenced until done

    async def submit(self, item: A) -> R:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, answer))
        if len(self._pending) == 1:
            loop.call_soon(self._start_flush)
        return await answer

    def _start_flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self, batch: list[tuple[A, asyncio.Future[R]]]) -> None:
        try:
            results = await self._serve([item for item, _answer in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"served {len(results)} answers for {len(batch)} items")
        except asyncio.CancelledError:
            for _item, answer in batch:
                answer.cancel()
            raise
        except Exception as exc:  # handed to the callers, who raise it
            for _item, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for (_item, answer), result in zip(batch, results, strict=True):
            if not answer.done():  # its caller may have been cancelled meanwhile
                answer.set_result(result)
