"""What a customer sees of their own waiting writes: provisional tickets in their list,
their profile as changed (read-your-writes), files being deleted left out.

Only the customer's own view shows them (staff and services see the providers' data); the
records are read once per request, and a store that does not answer shows nothing extra.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import msgspec
from redis.exceptions import RedisError

from gateway.context import Context
from gateway.domain import (
    Customer,
    DeliveryState,
    QueuedWrite,
    Ticket,
    TicketStatus,
    WriteKind,
)
from gateway.outbox.store import OutboxStore

__all__ = [
    "PROVISIONAL",
    "deleting",
    "own_writes",
    "pending_tickets",
    "provisional_ticket",
    "with_deliveries",
    "with_profile",
]

log = logging.getLogger(__name__)

# a provisional ticket's id: this prefix and the write's id (docs/design.md "The outbox")
PROVISIONAL = "pending-"


async def own_writes(ctx: Context, customer_id: str) -> list[QueuedWrite]:
    """The signed-in customer's outbox records ([] for anyone else's)."""
    outbox = ctx.services.outbox
    viewer = ctx.viewer
    if outbox is None or viewer.customer_id != customer_id or viewer.privileged:
        return []
    if ctx.own_writes is None:
        ctx.own_writes = asyncio.ensure_future(_read(outbox.store, customer_id))
    writes: list[QueuedWrite] = await asyncio.shield(ctx.own_writes)
    return writes


async def _read(store: OutboxStore, customer_id: str) -> list[QueuedWrite]:
    try:
        writes = await store.writes(customer_id)
    except (RedisError, OSError) as error:
        log.warning("outbox state unreadable: %s", type(error).__name__)
        return []
    return writes


def provisional_ticket(write: QueuedWrite) -> Ticket:
    """The ticket the customer sees while its write waits (or after it failed)."""
    assert write.draft is not None
    return Ticket(
        id=PROVISIONAL + write.id,
        subject=write.draft.subject,
        status=TicketStatus.NEW,
        created_at=write.accepted_at,
        requester_id=write.requester_id or "",
        description=write.draft.description,
        priority=write.draft.priority,
        delivery=write.delivery,
    )


def pending_tickets(writes: Iterable[QueuedWrite], status: TicketStatus | None) -> list[Ticket]:
    """Provisional tickets of writes not delivered, newest first."""
    if status not in (None, TicketStatus.NEW):
        return []
    waiting = [
        provisional_ticket(w)
        for w in writes
        if w.kind is WriteKind.CREATE_TICKET and w.state is not DeliveryState.DELIVERED
    ]
    return waiting[::-1]


def with_deliveries(tickets: list[Ticket], writes: Iterable[QueuedWrite]) -> list[Ticket]:
    """The provider's tickets, those that waited in the outbox saying so."""
    delivered = {w.result_id: w for w in writes if w.result_id is not None}
    if not delivered:
        return tickets
    return [
        msgspec.structs.replace(t, delivery=delivered[t.id].delivery) if t.id in delivered else t
        for t in tickets
    ]


def with_profile(customer: Customer, writes: Iterable[QueuedWrite]) -> Customer:
    """The customer with the changes still waiting applied, in order; `delivery` says how
    the latest profile change that waited stands (until it is delivered)."""
    changed = customer
    for write in writes:
        if write.kind is not WriteKind.UPDATE_PROFILE or write.changes is None:
            continue
        if write.state is DeliveryState.QUEUED:
            changes = write.changes
            changed = msgspec.structs.replace(
                changed,
                name=changed.name if changes.name is None else changes.name,
                phone=changed.phone if changes.phone is None else changes.phone,
                company=changed.company if changes.company is None else changes.company,
                delivery=write.delivery,
            )
        elif write.state is DeliveryState.FAILED:
            changed = msgspec.structs.replace(changed, delivery=write.delivery)
    return changed


def deleting(writes: Iterable[QueuedWrite]) -> set[str]:
    """Ids of the files whose deletion waits: the customer no longer sees them."""
    return {
        w.file.id
        for w in writes
        if w.kind is WriteKind.DELETE_FILE and w.file and w.state is DeliveryState.QUEUED
    }
