"""A verified delivery's events: dedupe, complete, route, invalidate, publish.

Each event id is remembered for 7 days (SET NX through the cache backend) before the event
is handled; when handling fails the id is forgotten again, so the provider's retry is
handled rather than taken for a duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from gateway.context import Services
from gateway.domain import (
    CustomerDeleted,
    CustomerUpdated,
    DomainEvent,
    FileDeleted,
    FileUploaded,
    Invoice,
    InvoicePaid,
    InvoiceStatus,
    InvoiceUpdated,
    TicketUpdated,
)
from gateway.events.publisher import EventPublisher
from gateway.loaders import Loaders
from gateway.loaders.erasure import erase_customer

__all__ = ["DEDUPE_TTL", "EventMirror", "Intake", "tags_of"]

log = logging.getLogger(__name__)

DEDUPE_TTL = 7 * 24 * 3600


@runtime_checkable
class EventMirror(Protocol):
    """A source that keeps its own copy of provider state (the sandbox) applies events to
    it, and answers the event with its record of the entity."""

    def apply_event(self, event: DomainEvent) -> DomainEvent: ...


def tags_of(event: DomainEvent) -> list[str]:
    """The cache tags (gateway/loaders) whose entries the event makes stale."""
    tags: list[str] = []
    if isinstance(event, InvoicePaid | InvoiceUpdated):
        billing_id = (
            event.invoice.billing_customer_id if event.invoice else event.billing_customer_id
        )
        invoice_id = event.invoice.id if event.invoice else event.invoice_id
        if billing_id:
            tags.append(f"billing:{billing_id}")
        if invoice_id:
            tags.append(f"invoice:{invoice_id}")
    elif isinstance(event, TicketUpdated):
        requester = event.ticket.requester_id if event.ticket else event.requester_id
        ticket_id = event.ticket.id if event.ticket else event.ticket_id
        if requester:
            tags.append(f"helpdesk:{requester}")
        if ticket_id:
            tags.append(f"ticket:{ticket_id}")
    elif isinstance(event, CustomerUpdated) and event.customer_id:
        tags.append(f"customer:{event.customer_id}")
    elif isinstance(event, FileUploaded | FileDeleted) and event.customer_id:
        tags.append(f"files:{event.customer_id}")
    return tags


class Intake:
    def __init__(self, services: Services, publisher: EventPublisher) -> None:
        self.services = services
        self.publisher = publisher

    async def take(self, events: Sequence[DomainEvent]) -> tuple[int, int]:
        """Handle the events not seen before; answers (handled, duplicates).

        Raises when one could not be handled: it and those after it are forgotten, so the
        provider's retry handles them.
        """
        backend = self.services.backend
        prefix = self.services.settings.cache_prefix
        fresh: list[tuple[str, DomainEvent]] = []
        for event in events:
            key = f"{prefix}webhook:{event.event_id}"
            if await backend.add(key, b"1", DEDUPE_TTL):
                fresh.append((key, event))
        for index, (_key, event) in enumerate(fresh):
            try:
                await self.handle(event)
            except BaseException:
                await backend.delete([key for key, _event in fresh[index:]])
                raise
        return len(fresh), len(events) - len(fresh)

    async def handle(self, event: DomainEvent) -> DomainEvent:
        """Complete, route, invalidate, publish; answers the event as published."""
        event = await self._complete(event)
        for source in self.services.sources.all():
            if isinstance(source, EventMirror):
                event = source.apply_event(event)
        event = await self._route(event)
        if isinstance(event, CustomerDeleted) and event.customer_id:
            # before the event goes live: a replica's subscriptions of the customer end on
            # it, and nothing of the customer is left to answer them from
            removed = await erase_customer(
                self.services.cache, event.customer_id, self.services.sources.crm
            )
            log.info(
                "customer erased from the cache",
                extra={"customer_id": event.customer_id, "removed": removed},
            )
        tags = tags_of(event)
        if tags:
            await self.services.cache.drop_tags(tags)
            await self.services.cache.note_changes(tags)
        await self.publisher.publish(event)
        log.info(
            "webhook event handled",
            extra={
                "event_id": event.event_id,
                "event_type": type(event).__name__,
                "customer_id": event.customer_id,
            },
        )
        return event

    async def _complete(self, event: DomainEvent) -> DomainEvent:
        """Fetch the entity of an event that names only its id (Xero, QuickBooks)."""
        if isinstance(event, InvoicePaid | InvoiceUpdated) and event.invoice is None:
            if not event.invoice_id:
                return event
            [found] = await self.services.sources.billing.invoices([event.invoice_id])
            if isinstance(found, Exception):
                raise found
            if not isinstance(found, Invoice):
                return event
            completed = msgspec.structs.replace(
                event, invoice=found, billing_customer_id=found.billing_customer_id
            )
            if isinstance(completed, InvoiceUpdated) and found.status is InvoiceStatus.PAID:
                return InvoicePaid(**msgspec.structs.asdict(completed))
            return completed
        if isinstance(event, TicketUpdated) and event.ticket is None and event.ticket_id:
            [ticket] = await self.services.sources.helpdesk.tickets([event.ticket_id])
            if isinstance(ticket, Exception):
                raise ticket
            if ticket is not None:
                return msgspec.structs.replace(
                    event, ticket=ticket, requester_id=ticket.requester_id
                )
        return event

    async def _route(self, event: DomainEvent) -> DomainEvent:
        """Fill in the CRM id of the customer the event concerns, where a link knows it."""
        if event.customer_id is not None:
            return event
        link: str | None = None
        if isinstance(event, InvoicePaid | InvoiceUpdated):
            billing_id = (
                event.invoice.billing_customer_id if event.invoice else event.billing_customer_id
            )
            link = f"billing:{billing_id}" if billing_id else None
        elif isinstance(event, TicketUpdated):
            requester = event.ticket.requester_id if event.ticket else event.requester_id
            link = f"helpdesk:{requester}" if requester else None
        if link is None:
            return event
        loaders = Loaders(self.services.sources, self.services.cache)
        customer_id: str | None = await loaders.customer_id_by_link.load(link)
        if customer_id is None:
            log.info("webhook event for no known customer", extra={"link": link})
            return event
        return msgspec.structs.replace(event, customer_id=customer_id)
