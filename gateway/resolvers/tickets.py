"""Help-desk tickets of a customer, ticket(id), createTicket."""

from __future__ import annotations

from typing import Any

from gateway.cache.entity import EntityCache
from gateway.cache.idempotency import IdempotencyStore
from gateway.context import Context
from gateway.domain import Customer, Page, Ticket, TicketDraft, TicketQuery, TicketStatus
from gateway.errors import BadUserInput, NotFound
from gateway.resolvers.access import check_page_args, require_customer, require_viewer
from gateway.resolvers.customers import owner_of
from gateway.resolvers.links import helpdesk_id_of
from gateway.resolvers.pages import EMPTY_PAGE, counted_page

__all__ = ["create_ticket", "customer_tickets", "ticket", "ticket_requester"]

_PRIORITIES = ("low", "normal", "high", "urgent")


async def customer_tickets(
    ctx: Context,
    customer: Customer,
    first: int,
    after: str | None,
    status: TicketStatus | None,
    path: list[Any],
    with_total: bool = False,
) -> Page[Ticket]:
    """A page of the customer's tickets (see gateway.resolvers.pages for which path);
    `with_total`: `totalCount` is selected."""
    check_page_args(first, after)
    requester_id = await helpdesk_id_of(ctx, customer)
    if requester_id is None:
        return EMPTY_PAGE
    query = TicketQuery(requester_id=requester_id, first=first, after=after, status=status)
    loaders = ctx.loaders
    return await counted_page(
        ctx,
        query,
        path,
        own=loaders.ticket_page,
        indexed=loaders.ticket_page_indexed,
        count=loaders.ticket_count,
        with_total=with_total,
        pages_carry_totals=ctx.services.sources.helpdesk.pages_carry_totals,
    )


async def ticket(ctx: Context, id: str, path: list[Any]) -> Ticket:
    viewer = require_viewer(ctx)
    found: Ticket | None = await ctx.load(ctx.loaders.ticket, id, path)
    if found is None:
        raise NotFound()
    if not viewer.privileged and await owner_of(ctx, "helpdesk", found.requester_id) is None:
        raise NotFound()
    return found


async def ticket_requester(ctx: Context, found: Ticket) -> Customer | None:
    return await owner_of(ctx, "helpdesk", found.requester_id)


def validate_draft(subject: str, description: str, priority: str | None) -> TicketDraft:
    subject = subject.strip()
    description = description.strip()
    if not subject:
        raise BadUserInput("subject may not be empty", field="subject")
    if len(subject) > 250:
        raise BadUserInput("subject is longer than 250 characters", field="subject")
    if not description:
        raise BadUserInput("description may not be empty", field="description")
    if len(description) > 64_000:
        raise BadUserInput("description is longer than 64000 characters", field="description")
    if priority is not None and priority.lower() not in _PRIORITIES:
        raise BadUserInput(f"priority must be one of {', '.join(_PRIORITIES)}", field="priority")
    return TicketDraft(
        subject=subject, description=description, priority=priority and priority.lower()
    )


async def create_ticket(ctx: Context, draft: TicketDraft, client_mutation_id: str | None) -> Ticket:
    """Create a ticket as the signed-in customer; a retry with the same clientMutationId
    answers the first ticket and creates nothing."""
    customer_id = require_customer(ctx)
    customer: Customer | None = await ctx.loaders.customer.load(customer_id)
    requester_id = await helpdesk_id_of(ctx, customer) if customer else None
    if requester_id is None:
        raise NotFound("no help-desk account for this customer")
    helpdesk = ctx.services.sources.helpdesk
    cache: EntityCache = ctx.services.cache

    async def create(key: str | None) -> Ticket:
        created = await helpdesk.create_ticket(requester_id, draft, key)
        await cache.drop_tags([f"helpdesk:{requester_id}"])
        await cache.note_changes([f"helpdesk:{requester_id}"])
        return created

    if not client_mutation_id:
        return await create(None)
    if len(client_mutation_id) > 200:
        raise BadUserInput(
            "clientMutationId is longer than 200 characters", field="clientMutationId"
        )
    key = f"createTicket:{customer_id}:{client_mutation_id}"
    store = IdempotencyStore(ctx.services.backend, ctx.settings.cache_prefix)

    async def create_once() -> bytes:
        return (await create(key)).id.encode()

    # tagged with the customer's erasure tag, not `customer:`: a profile change must not
    # forget which tickets a retry already created
    owner = [f"owner:{customer_id}"]
    ticket_id = (await store.run_once(key, create_once, tags=owner)).decode()
    found: Ticket | None = await ctx.loaders.ticket.load(ticket_id)
    if found is None:
        raise NotFound()
    return found
