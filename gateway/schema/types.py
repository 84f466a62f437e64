"""The GraphQL types of DESIGN section 6.

Values are the domain models themselves: leaf fields are plain attributes read by the
default resolver, `is_type_of` maps a domain model to its GraphQL type, and only the
fields that need another load have resolvers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

import strawberry
from strawberry.types import Info

from gateway import domain
from gateway.context import Context
from gateway.resolvers import billing, customers, files, tickets
from gateway.schema.internals import resolve_info
from gateway.schema.prefetch import selected_arguments

__all__ = [
    "BillingPortalSession",
    "BillingSubscription",
    "Connection",
    "Customer",
    "DeliveryState",
    "File",
    "Invoice",
    "InvoiceStatus",
    "Ticket",
    "TicketStatus",
    "WriteDelivery",
]

T = TypeVar("T")

# registered on the domain enums themselves, so resolvers return domain values unchanged
InvoiceStatus = domain.InvoiceStatus
TicketStatus = domain.TicketStatus
strawberry.enum(InvoiceStatus, name="InvoiceStatus")
strawberry.enum(TicketStatus, name="TicketStatus")
DeliveryState = domain.DeliveryState
strawberry.enum(
    DeliveryState,
    name="DeliveryState",
    description="QUEUED: accepted and kept while the provider is unavailable; DELIVERED: "
    "the provider has it; FAILED: the provider refused it or it could not be delivered in time.",
)


@strawberry.type(description="How a write the customer made stands (docs/design.md: the outbox).")
class WriteDelivery:
    write_id: strawberry.ID
    state: DeliveryState
    accepted_at: datetime
    delivered_at: datetime | None
    reason: str | None = strawberry.field(description="Why it failed, in plain words.")


def _path(info: Info[Context, Any]) -> list[Any]:
    return list(info.path.as_list())


def _total_selected(info: Info[Context, Any]) -> bool:
    """Whether the connection being resolved has `totalCount` in its selection (fragments
    followed, @skip/@include honoured): only then is a provider asked for a total."""
    return bool(selected_arguments(resolve_info(info), "totalCount"))


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


class _EdgeValue:
    __slots__ = ("cursor", "node")

    def __init__(self, cursor: str, node: Any) -> None:
        self.cursor = cursor
        self.node = node


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type(description="A Relay-style page: edges, pageInfo, totalCount.")
class Connection(Generic[T]):
    total_count: int | None

    @strawberry.field
    def edges(self, root: strawberry.Parent[domain.Page[Any]]) -> list[Edge[T]]:
        page = root
        cursors = page.cursors
        if cursors is not None and len(cursors) == len(page.items):
            return [_EdgeValue(c, n) for c, n in zip(cursors, page.items, strict=True)]  # type: ignore[misc]
        fallback = page.end_cursor or ""
        return [_EdgeValue(fallback, n) for n in page.items]  # type: ignore[misc]

    @strawberry.field
    def page_info(self, root: strawberry.Parent[domain.Page[Any]]) -> PageInfo:
        return root  # type: ignore[return-value]  # Page has has_next_page and end_cursor


@strawberry.type(name="BillingSubscription")
class BillingSubscription:
    id: strawberry.ID
    status: str
    plan: str | None
    current_period_end: datetime | None
    cancel_at_period_end: bool


@strawberry.federation.type(keys=["id"])
class Customer:
    id: strawberry.ID
    name: str | None
    email: str | None
    company: str | None
    phone: str | None

    @strawberry.field(
        description="The signed-in customer's latest profile change that had to wait "
        "(queued, or failed and why); null once delivered."
    )
    def profile_delivery(self, root: strawberry.Parent[domain.Customer]) -> WriteDelivery | None:
        return root.delivery  # type: ignore[return-value]

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, domain.Customer)

    @classmethod
    async def resolve_reference(
        cls, info: Info[Context, Any], id: strawberry.ID
    ) -> Customer | None:
        return await customers.customer(info.context, id, _path(info))  # type: ignore[return-value]

    @strawberry.field(description="Nullable on purpose: a billing failure nulls only this field.")
    async def invoices(
        self,
        root: strawberry.Parent[domain.Customer],
        info: Info[Context, Any],
        first: int | None = 20,
        after: str | None = None,
        status: domain.InvoiceStatus | None = None,
    ) -> Connection[Invoice] | None:
        return await billing.customer_invoices(  # type: ignore[return-value]
            info.context,
            root,
            20 if first is None else first,
            after,
            status,
            _path(info),
            with_total=_total_selected(info),
        )

    @strawberry.field(description="Every subscription, whatever its status.")
    async def subscriptions(
        self, root: strawberry.Parent[domain.Customer], info: Info[Context, Any]
    ) -> list[BillingSubscription] | None:
        return await billing.customer_subscriptions(info.context, root, _path(info))  # type: ignore[return-value]

    @strawberry.field
    async def tickets(
        self,
        root: strawberry.Parent[domain.Customer],
        info: Info[Context, Any],
        first: int | None = 20,
        after: str | None = None,
        status: domain.TicketStatus | None = None,
    ) -> Connection[Ticket] | None:
        return await tickets.customer_tickets(  # type: ignore[return-value]
            info.context,
            root,
            20 if first is None else first,
            after,
            status,
            _path(info),
            with_total=_total_selected(info),
        )

    @strawberry.field
    async def files(
        self,
        root: strawberry.Parent[domain.Customer],
        info: Info[Context, Any],
        first: int | None = 20,
        after: str | None = None,
    ) -> Connection[File] | None:
        return await files.customer_files(
            info.context, root, 20 if first is None else first, after, _path(info)
        )  # type: ignore[return-value]


@strawberry.federation.type(keys=["id"])
class Invoice:
    id: strawberry.ID
    number: str | None
    status: domain.InvoiceStatus
    currency: str = strawberry.field(description="Lower-case ISO 4217 code.")
    total: int = strawberry.field(description="Minor units of currency (cents).")
    amount_due: int = strawberry.field(description="What is still owed now; 0 when paid or void.")
    amount_paid: int
    created_at: datetime
    due_date: datetime | None
    paid_at: datetime | None
    hosted_url: str | None
    pdf_url: str | None
    source: str

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, domain.Invoice)

    @classmethod
    async def resolve_reference(cls, info: Info[Context, Any], id: strawberry.ID) -> Invoice:
        return await billing.invoice(info.context, id, _path(info))  # type: ignore[return-value]

    @strawberry.field
    async def customer(
        self, root: strawberry.Parent[domain.Invoice], info: Info[Context, Any]
    ) -> Customer | None:
        return await billing.invoice_customer(info.context, root)  # type: ignore[return-value]


@strawberry.federation.type(keys=["id"])
class Ticket:
    id: strawberry.ID
    subject: str
    description: str | None
    status: domain.TicketStatus
    priority: str | None
    created_at: datetime
    updated_at: datetime | None
    delivery: WriteDelivery | None = strawberry.field(
        description="Set on a ticket the gateway kept while the help desk was unavailable: "
        "a provisional ticket (id `pending-…`) while QUEUED or FAILED, the real one once "
        "DELIVERED."
    )

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, domain.Ticket)

    @classmethod
    async def resolve_reference(cls, info: Info[Context, Any], id: strawberry.ID) -> Ticket:
        return await tickets.ticket(info.context, id, _path(info))  # type: ignore[return-value]

    @strawberry.field
    async def requester(
        self, root: strawberry.Parent[domain.Ticket], info: Info[Context, Any]
    ) -> Customer | None:
        return await tickets.ticket_requester(info.context, root)  # type: ignore[return-value]


@strawberry.federation.type(keys=["id"])
class File:
    id: strawberry.ID
    name: str
    size: int
    content_type: str | None
    uploaded_at: datetime

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, domain.StoredFile)

    @classmethod
    async def resolve_reference(cls, info: Info[Context, Any], id: strawberry.ID) -> File:
        return await files.file(info.context, id, _path(info))  # type: ignore[return-value]

    @strawberry.field(description="A signed, time-limited link (seconds, clamped to a maximum).")
    def download_url(
        self,
        root: strawberry.Parent[domain.StoredFile],
        info: Info[Context, Any],
        expires_in: int | None = 300,
    ) -> str:
        return files.download_url(info.context, root, 300 if expires_in is None else expires_in)


@strawberry.type
class BillingPortalSession:
    url: str
    expires_at: datetime | None
