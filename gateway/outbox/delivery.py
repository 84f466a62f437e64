"""The worker's side of the outbox: deliver one queued write, in order per customer.

For a write taken off the bus: its record says whether it is still to do (a redelivered
message of a delivered write does nothing); a write waits while an earlier write of the same
customer is undelivered, or while another worker holds the customer's lease; then it is sent
with the key its first attempt carried (the provider answers a repeat with the first
answer, so a worker killed between the provider's answer and the record sends it again
harmlessly). Delivered: the record says so, the gateway's cached copies go, a `ticketUpdated`
goes to the customer's live subscriptions and the confirmation is sent. Refused by the
provider, or still unavailable after OUTBOX_MAX_ATTEMPTS deliveries or OUTBOX_MAX_AGE
seconds: the write is dead-lettered with the reason in plain words.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec

from gateway.cache.entity import EntityCache
from gateway.domain import (
    Customer,
    DeliveryState,
    DomainEvent,
    FileDeleted,
    QueuedWrite,
    Ticket,
    TicketUpdated,
    WriteKind,
)
from gateway.errors import GatewayError
from gateway.events.bus import EventBus
from gateway.events.live import LiveHub
from gateway.observability import OUTBOX_DEAD_LETTERS, OUTBOX_WRITES
from gateway.outbox.store import OutboxStore
from gateway.outbox.writes import (
    customer_view_changed,
    customer_written,
    file_deleted,
    plain_reason,
    send,
    ticket_created,
    unavailable,
)
from gateway.settings import Settings
from gateway.sources.registry import Sources

__all__ = ["Deliverer", "Outcome"]

log = logging.getLogger(__name__)

Outcome = Literal["done", "dead", "wait", "retry"]
# how long a write waits for an earlier one of its customer before it is looked at again
WAIT = 0.2


class Deliverer:
    def __init__(
        self,
        store: OutboxStore,
        bus: EventBus,
        sources: Sources,
        cache: EntityCache,
        live: LiveHub,
        settings: Settings,
        owner: str,
    ) -> None:
        self.store = store
        self.bus = bus
        self.sources = sources
        self.cache = cache
        self.live = live
        self.settings = settings
        self.owner = owner
        # the lease outlives a whole send (every upstream attempt within its deadline)
        self.lease_ttl = max(settings.upstream_timeout * 2, settings.events_redelivery_timeout)

    @property
    def hold(self) -> float:
        """The longest a worker keeps a message before handing it back: below the bus's
        redelivery timeout, so no other worker takes it over meanwhile."""
        return self.settings.events_redelivery_timeout / 2

    def backoff(self, attempts: int, retry_after: float | None = None) -> float:
        """Full-jitter exponential pause before the write's next delivery, at least what
        the provider asked for (Retry-After)."""
        ceiling = self.settings.outbox_retry_base * 2 ** min(attempts - 1, 20)
        pause = random.uniform(0, min(self.settings.outbox_retry_max, ceiling))
        return max(pause, retry_after or 0.0)

    async def deliver(self, write: QueuedWrite) -> tuple[Outcome, float]:
        """Deliver the write if it is its turn; answers the outcome and, for "wait" and
        "retry", the seconds before the message should be handed back."""
        extra = {"write_id": write.id, "kind": write.kind.value}
        current = await self.store.get(write.customer_id, write.id)
        if current is None:
            log.info("outbox write no longer stored (erased or dropped)", extra=extra)
            return "done", 0.0
        if current.state is not DeliveryState.QUEUED:
            log.info("outbox write already %s", current.state.value.lower(), extra=extra)
            return "done", 0.0
        # checked before its turn comes: a write held up behind another one ages too
        since = current.retried_at or current.accepted_at
        if (datetime.now(UTC) - since).total_seconds() > self.settings.outbox_max_age:
            why = f"it waited longer than {_duration(self.settings.outbox_max_age)}"
            return await self._dead(current, plain_reason(current, None, why), extra), 0.0
        earlier = [
            w
            for w in await self.store.writes(write.customer_id)
            if w.seq < current.seq and w.state is DeliveryState.QUEUED
        ]
        if current.not_before is not None:
            left = (current.not_before - datetime.now(UTC)).total_seconds()
            if left > 0:  # its pause, handed back as often as the bus needs
                return "wait", min(left, self.hold)
        if earlier or not await self.store.lease(write.customer_id, self.owner, self.lease_ttl):
            return "wait", WAIT
        try:
            return await self._deliver(current, extra)
        finally:
            await self.store.unlease(write.customer_id, self.owner)

    async def _deliver(self, write: QueuedWrite, extra: dict[str, str]) -> tuple[Outcome, float]:
        attempts = write.attempts + 1
        try:
            answer = await send(write, self.sources)
        except Exception as error:
            if not unavailable(error) and isinstance(error, GatewayError):
                # the provider's answer (4xx, not found, invalid): the same write gets it again
                refused = msgspec.structs.replace(write, attempts=attempts)
                return await self._dead(refused, plain_reason(write, error), extra), 0.0
            if attempts >= self.settings.outbox_max_attempts:
                why = f"it was tried {attempts} times"
                tried = msgspec.structs.replace(write, attempts=attempts)
                return await self._dead(tried, plain_reason(write, None, why), extra), 0.0
            delay = self.backoff(attempts, getattr(error, "retry_after", None))
            later = datetime.now(UTC) + timedelta(seconds=delay)
            await self.store.put(
                msgspec.structs.replace(write, attempts=attempts, not_before=later)
            )
            log.warning(
                "outbox write not delivered (attempt %d), again in %.1fs: %s",
                attempts,
                delay,
                type(error).__name__,
                extra=extra,
            )
            return "retry", min(delay, self.hold)
        pause = self.settings.outbox_pause_after_send
        if pause:
            log.warning("outbox write sent; pausing before recording it", extra=extra)
            await asyncio.sleep(pause)
        # What must not be lost goes first (the confirmation, durably on the bus; the
        # caches): a worker that dies before the record below repeats it all, the provider
        # answers the same, the confirmation is sent once by its id.
        now = datetime.now(UTC)
        live: DomainEvent | None = None
        if write.kind is WriteKind.CREATE_TICKET and isinstance(answer, Ticket):
            ticket = msgspec.structs.replace(answer, delivery=write.delivery)
            live = TicketUpdated(
                event_id=f"delivered:{write.id}",
                customer_id=write.customer_id,
                occurred_at=now,
                ticket=ticket,
                requester_id=answer.requester_id,
                ticket_id=answer.id,
            )
            await self.bus.publish(msgspec.structs.replace(live, received=True))
            await ticket_created(self.cache, answer.requester_id)
        elif write.kind is WriteKind.UPDATE_PROFILE and isinstance(answer, Customer):
            await customer_written(self.cache, answer)
        elif write.kind is WriteKind.DELETE_FILE and write.file is not None:
            await file_deleted(self.cache, write.customer_id)
            live = FileDeleted(
                event_id=f"delivered:{write.id}",
                customer_id=write.customer_id,
                occurred_at=now,
                file_id=write.file.id,
            )
        done = msgspec.structs.replace(
            write,
            state=DeliveryState.DELIVERED,
            attempts=attempts,
            delivered_at=now,
            result_id=answer.id if isinstance(answer, Ticket) else None,
            reason=None,
        )
        await self.store.put(done)
        await customer_view_changed(self.cache, write.customer_id)
        OUTBOX_WRITES.labels(write.kind.value, "delivered").inc()
        log.info("outbox write delivered", extra={**extra, "attempts": attempts})
        if live is not None:  # after the record: a client that reads on it sees DELIVERED
            await self.live.publish(live)
        await self.store.prune(write.customer_id, self.settings.outbox_keep_delivered)
        return "done", 0.0

    async def _dead(self, write: QueuedWrite, reason: str, extra: dict[str, str]) -> Outcome:
        dead = msgspec.structs.replace(write, state=DeliveryState.FAILED, reason=reason)
        await self.store.put(dead)
        await customer_view_changed(self.cache, write.customer_id)
        OUTBOX_WRITES.labels(write.kind.value, "dead").inc()
        OUTBOX_DEAD_LETTERS.set(await self.store.dead_count())
        log.error("outbox write dead-lettered: %s", reason, extra=extra)
        return "dead"


def _duration(seconds: float) -> str:
    """`seconds` in the largest unit that says it in whole numbers or near: "24 hours"."""
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size, 1)
            return f"{count:g} {unit}{'' if count == 1 else 's'}"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"
