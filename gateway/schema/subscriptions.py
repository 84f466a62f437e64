"""The Subscription root (DESIGN §6): invoiceUpdated and ticketUpdated, the viewer's own.

Each field listens to the live updates of the signed-in customer (gateway/events/live.py
behind `Services.live`) and yields the entity of each matching event. The listener is
registered when the subscription starts, before the first event is awaited.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import strawberry
from strawberry.types import Info

from gateway import domain
from gateway.context import Context
from gateway.errors import IntegrationUnavailable
from gateway.resolvers.access import require_customer
from gateway.schema.types import Invoice, Ticket

__all__ = ["Subscription"]


class _Updates:
    """The entities one customer's events carry, as a subscription's source stream."""

    def __init__(
        self,
        context: Context,
        events: AsyncIterator[domain.DomainEvent],
        pick: Callable[[domain.DomainEvent], Any],
    ) -> None:
        self._context = context
        self._events = events
        self._pick = pick

    def __aiter__(self) -> _Updates:
        return self

    async def __anext__(self) -> Any:
        customer_id = self._context.viewer.customer_id
        while True:
            event = await self._events.__anext__()
            value = self._pick(event) if event.customer_id == customer_id else None
            if value is not None:
                self._context.renew()  # each event is answered like a new request
                return value

    async def aclose(self) -> None:
        close = getattr(self._events, "aclose", None)
        if close is not None:
            await close()


def _updates(info: Info[Context, Any], pick: Callable[[domain.DomainEvent], Any]) -> _Updates:
    context = info.context
    customer_id = require_customer(context)
    live = context.services.live
    if live is None:
        raise IntegrationUnavailable("events", "live updates are not available")
    return _Updates(context, live.listen(customer_id), pick)


def _invoice(event: domain.DomainEvent) -> domain.Invoice | None:
    if isinstance(event, domain.InvoicePaid | domain.InvoiceUpdated):
        return event.invoice
    return None


def _ticket(event: domain.DomainEvent) -> domain.Ticket | None:
    return event.ticket if isinstance(event, domain.TicketUpdated) else None


@strawberry.type
class Subscription:
    @strawberry.subscription(description="The signed-in customer's invoices, as they change.")
    async def invoice_updated(self, info: Info[Context, Any]) -> AsyncIterator[Invoice]:
        return _updates(info, _invoice)

    @strawberry.subscription(description="The signed-in customer's tickets, as they change.")
    async def ticket_updated(self, info: Info[Context, Any]) -> AsyncIterator[Ticket]:
        return _updates(info, _ticket)
