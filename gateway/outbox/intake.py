"""The request path of a provider write: send it now, or keep it and answer QUEUED.

A write is sent at once unless the customer already has writes waiting (it would overtake
them); when the provider is unavailable (gateway.outbox.writes.unavailable) the write is
stored in the outbox and put on the event bus for `portal-gateway worker`, with the
idempotency key its first attempt carried, so a first attempt that did reach the provider
is not done twice. A refusal is answered as before.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
from redis.exceptions import RedisError

from gateway.cache.entity import EntityCache
from gateway.domain import DeliveryState, DomainEvent, QueuedWrite, WriteQueued
from gateway.errors import IntegrationUnavailable
from gateway.observability import OUTBOX_WRITES
from gateway.outbox.store import OutboxStore
from gateway.outbox.writes import customer_view_changed, send, unavailable
from gateway.sources.registry import Sources

__all__ = ["Outbox", "WriteBus", "new_write_id"]

log = logging.getLogger(__name__)


class WriteBus(Protocol):
    """Where a queued write is put for the worker: the deployment's event bus
    (gateway/events/bus.py; the request path reaches it only through this)."""

    async def publish(self, event: DomainEvent) -> None: ...


def new_write_id() -> str:
    return "w" + secrets.token_hex(12)


class Outbox:
    """What the app holds: the outbox's state store and the bus its writes travel on."""

    def __init__(self, store: OutboxStore, bus: WriteBus, cache: EntityCache) -> None:
        self.store = store
        self.bus = bus
        self.cache = cache

    async def waiting(self, customer_id: str) -> bool:
        """Whether the customer has writes not delivered yet (a store that does not answer
        counts as none: the write is then sent, as without an outbox)."""
        try:
            writes = await self.store.writes(customer_id)
        except (RedisError, OSError) as error:
            log.warning("outbox state unreadable: %s", type(error).__name__)
            return False
        return any(write.state is DeliveryState.QUEUED for write in writes)

    async def submit(self, write: QueuedWrite, sources: Sources) -> tuple[QueuedWrite, Any]:
        """Send `write` now, or queue it: answers the write (DELIVERED, or QUEUED as stored)
        and what the provider answered (None when queued)."""
        if not await self.waiting(write.customer_id):
            try:
                answer = await send(write, sources)
            except Exception as error:
                if not unavailable(error):
                    raise
                log.info(
                    "provider unavailable: write queued",
                    extra={"write_id": write.id, "kind": write.kind.value},
                )
                return await self.queue(write, error), None
            now = datetime.now(UTC)
            OUTBOX_WRITES.labels(write.kind.value, "direct").inc()
            return _replace(write, state=DeliveryState.DELIVERED, delivered_at=now), answer
        return await self.queue(write, None), None

    async def queue(self, write: QueuedWrite, cause: Exception | None) -> QueuedWrite:
        """Store the write and put it on the bus; raises IntegrationUnavailable (the
        provider's own error where there is one) when either could not be done."""
        stored: QueuedWrite | None = None
        try:
            seq = await self.store.next_seq(write.customer_id)
            queued = stored = _replace(write, seq=seq, state=DeliveryState.QUEUED)
            await self.store.put(queued)
            event = WriteQueued(
                event_id=f"write:{write.id}",
                customer_id=write.customer_id,
                occurred_at=write.accepted_at,
                write=queued,
            )
            await self.bus.publish(event)
        except Exception as error:
            if stored is not None:  # no pending item the worker would never deliver
                with contextlib.suppress(Exception):
                    await self.store.drop(write.customer_id, write.id)
            log.error(
                "write could not be queued: %s", type(error).__name__, extra={"write_id": write.id}
            )
            if isinstance(cause, IntegrationUnavailable):
                raise cause from error
            raise IntegrationUnavailable("outbox", "the write could not be stored") from error
        OUTBOX_WRITES.labels(write.kind.value, "queued").inc()
        await customer_view_changed(self.cache, write.customer_id)
        return queued


def _replace(write: QueuedWrite, **changes: Any) -> QueuedWrite:
    return msgspec.structs.replace(write, **changes)
