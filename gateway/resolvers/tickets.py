"""Help-desk tickets of a customer, ticket(id), createTicket."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.cache.idempotency import IdempotencyStore
from gateway.context import Context
from gateway.domain import (
    Customer,
    DeliveryState,
    Page,
    QueuedWrite,
    Ticket,
    TicketDraft,
    TicketQuery,
    TicketStatus,
    WriteDelivery,
    WriteKind,
)
from gateway.errors import BadUserInput, IntegrationUnavailable, NotFound
from gateway.outbox import Outbox, new_write_id
from gateway.outbox.view import (
    PROVISIONAL,
    own_writes,
    pending_tickets,
    provisional_ticket,
    with_deliveries,
)
from gateway.outbox.writes import ticket_created
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
    writes = await own_writes(ctx, customer.id)
    pending = pending_tickets(writes, status) if after is None else []
    try:
        page = await counted_page(
            ctx,
            query,
            path,
            own=loaders.ticket_page,
            indexed=loaders.ticket_page_indexed,
            count=loaders.ticket_count,
            with_total=with_total,
            pages_carry_totals=ctx.services.sources.helpdesk.pages_carry_totals,
        )
    except IntegrationUnavailable:
        if not pending:
            raise
        # the help desk is away: what the customer wrote meanwhile is still theirs to see;
        # the answer says the provider's part is missing (and is never cached)
        source = ctx.services.sources.helpdesk.name
        ctx.stale.append({"path": path, "source": source, "age": None})
        return Page(items=pending, next_cursor=None, total_count=None)
    if not writes:
        return page
    items = pending + with_deliveries(page.items, writes)
    total = None if page.total_count is None else page.total_count + len(pending)
    cursors = [page.cursors[0]] * len(pending) + page.cursors if page.cursors else None
    return Page(items=items, next_cursor=page.next_cursor, total_count=total, cursors=cursors)


async def ticket(ctx: Context, id: str, path: list[Any]) -> Ticket:
    viewer = require_viewer(ctx)
    if id.startswith(PROVISIONAL):
        provisional = await _own_ticket(ctx, id)
        if provisional is None:
            raise NotFound()
        return provisional
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


async def create_ticket(
    ctx: Context, draft: TicketDraft, client_mutation_id: str | None
) -> tuple[Ticket, WriteDelivery]:
    """Create a ticket as the signed-in customer, or keep it in the outbox while the help
    desk is unavailable (a provisional ticket, QUEUED); a retry with the same
    clientMutationId answers the first ticket and creates nothing."""
    customer_id = require_customer(ctx)
    if client_mutation_id and len(client_mutation_id) > 200:
        raise BadUserInput(
            "clientMutationId is longer than 200 characters", field="clientMutationId"
        )
    customer: Customer | None = await ctx.loaders.customer.load(customer_id)
    requester_id = await helpdesk_id_of(ctx, customer) if customer else None
    if requester_id is None:
        raise NotFound("no help-desk account for this customer")
    write_id = new_write_id()
    key = (
        f"createTicket:{customer_id}:{client_mutation_id}"
        if client_mutation_id
        else f"createTicket:{customer_id}:{write_id}"
    )
    write = QueuedWrite(
        id=write_id,
        kind=WriteKind.CREATE_TICKET,
        customer_id=customer_id,
        seq=0,
        accepted_at=datetime.now(UTC),
        idempotency_key=key,
        requester_id=requester_id,
        draft=draft,
        client_mutation_id=client_mutation_id,
    )

    async def create() -> bytes:
        outbox: Outbox | None = ctx.services.outbox
        if outbox is None:
            created = await ctx.services.sources.helpdesk.create_ticket(requester_id, draft, key)
            await ticket_created(ctx.services.cache, requester_id)
            return created.id.encode()
        done, answer = await outbox.submit(write, ctx.services.sources)
        ctx.own_writes = None  # read again: the write just kept is among them
        if isinstance(answer, Ticket):
            await ticket_created(ctx.services.cache, requester_id)
            return answer.id.encode()
        return (PROVISIONAL + done.id).encode()

    if not client_mutation_id:
        ticket_id = (await create()).decode()
    else:
        store = IdempotencyStore(ctx.services.backend, ctx.settings.cache_prefix)
        # tagged with the customer's erasure tag, not `customer:`: a profile change must not
        # forget which tickets a retry already created
        owner = [f"owner:{customer_id}"]
        ticket_id = (await store.run_once(key, create, tags=owner)).decode()
    found = await _own_ticket(ctx, ticket_id)
    if found is None:
        raise NotFound()
    delivery = found.delivery or WriteDelivery(
        write_id=write_id,
        state=DeliveryState.DELIVERED,
        accepted_at=write.accepted_at,
        delivered_at=write.accepted_at,
    )
    return found, delivery


async def _own_ticket(ctx: Context, id: str) -> Ticket | None:
    """A ticket by id; a provisional id answers the ticket its write became, once delivered
    (or the provisional ticket until then)."""
    if not id.startswith(PROVISIONAL):
        found: Ticket | None = await ctx.loaders.ticket.load(id)
        return found
    customer_id = ctx.viewer.customer_id
    if customer_id is None:
        return None
    write_id = id.removeprefix(PROVISIONAL)
    write = next((w for w in await own_writes(ctx, customer_id) if w.id == write_id), None)
    if write is None or write.kind is not WriteKind.CREATE_TICKET:
        return None
    if write.result_id is None:
        return provisional_ticket(write)
    delivered: Ticket | None = await ctx.loaders.ticket.load(write.result_id)
    return None if delivered is None else with_deliveries([delivered], [write])[0]
