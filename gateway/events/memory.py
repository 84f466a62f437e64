"""The in-process bus: the embedded default (no REDIS_URL), consumed by the app itself."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass

from gateway.domain import DomainEvent
from gateway.events.bus import Delivery

__all__ = ["MemoryBus"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Message:
    id: str
    event: DomainEvent
    published: float  # time.monotonic()
    deliveries: int = 0


class MemoryBus:
    """A queue in this process: survives a consumer task, not the process.

    Bounded: past `max_length` waiting messages the oldest is dropped (and logged), so a
    stalled consumer cannot grow the gateway's memory without end.
    """

    name = "memory"

    def __init__(self, redelivery_timeout: float = 60.0, max_length: int = 100_000) -> None:
        self.redelivery_timeout = redelivery_timeout
        self.max_length = max_length
        self._ready: deque[_Message] = deque()
        self._inflight: dict[str, tuple[float, _Message]] = {}
        self._ids = itertools.count(1)
        self._wakeup = asyncio.Event()
        self.dead: list[tuple[DomainEvent, str]] = []  # (event, reason), for an operator

    def __len__(self) -> int:
        """Messages waiting or in flight."""
        return len(self._ready) + len(self._inflight)

    async def publish(self, event: DomainEvent) -> None:
        self._ready.append(_Message(str(next(self._ids)), event, time.monotonic()))
        while len(self._ready) > self.max_length:
            dropped = self._ready.popleft()
            log.error(
                "memory bus full: dropped an event", extra={"event_id": dropped.event.event_id}
            )
        self._wakeup.set()

    async def erase_customer(self, customer_id: str) -> int:
        before = len(self._ready) + len(self.dead)
        self._ready = deque(m for m in self._ready if m.event.customer_id != customer_id)
        self.dead = [(e, why) for e, why in self.dead if e.customer_id != customer_id]
        return before - len(self._ready) - len(self.dead)

    def _requeue_expired(self, now: float) -> float | None:
        """Put overdue in-flight messages back; answers the next deadline, if any."""
        next_deadline: float | None = None
        for message_id, (deadline, message) in list(self._inflight.items()):
            if deadline <= now:
                del self._inflight[message_id]
                self._ready.appendleft(message)
            elif next_deadline is None or deadline < next_deadline:
                next_deadline = deadline
        return next_deadline

    async def receive(
        self, consumer: str, max_messages: int = 10, wait: float = 1.0
    ) -> list[Delivery]:
        until = time.monotonic() + wait
        while True:
            now = time.monotonic()
            next_deadline = self._requeue_expired(now)
            if self._ready:
                break
            remaining = until - now
            if remaining <= 0:
                return []
            if next_deadline is not None:
                remaining = min(remaining, max(next_deadline - now, 0.001))
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
        deliveries: list[Delivery] = []
        deadline = time.monotonic() + self.redelivery_timeout
        while self._ready and len(deliveries) < max_messages:
            message = self._ready.popleft()
            message.deliveries += 1
            self._inflight[message.id] = (deadline, message)
            deliveries.append(Delivery(message.id, message.event, message.deliveries, consumer))
        return deliveries

    async def ack(self, delivery: Delivery) -> None:
        self._inflight.pop(delivery.message_id, None)

    async def release(self, delivery: Delivery) -> None:
        held = self._inflight.pop(delivery.message_id, None)
        if held is not None:
            self._ready.appendleft(held[1])
            self._wakeup.set()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        if self._inflight.pop(delivery.message_id, None) is not None:
            self.dead.append((delivery.event, reason))

    async def oldest_age(self) -> float | None:
        published = [m.published for m in self._ready]
        published += [m.published for _deadline, m in self._inflight.values()]
        return time.monotonic() - min(published) if published else 0.0

    async def aclose(self) -> None:
        return None
