"""Invoices, subscriptions and the billing portal of a customer."""

from __future__ import annotations

from typing import Any

from gateway.context import Context
from gateway.domain import (
    BillingPortalSession,
    Customer,
    Invoice,
    InvoiceQuery,
    InvoiceStatus,
    Page,
    Subscription,
)
from gateway.errors import BadUserInput, NotFound
from gateway.resolvers.access import check_page_args, require_customer, require_viewer
from gateway.resolvers.customers import owner_of
from gateway.resolvers.links import billing_id_of
from gateway.resolvers.pages import EMPTY_PAGE, counted_page

__all__ = [
    "create_billing_portal_session",
    "customer_invoices",
    "customer_subscriptions",
    "invoice",
    "invoice_customer",
]


async def customer_invoices(
    ctx: Context,
    customer: Customer,
    first: int,
    after: str | None,
    status: InvoiceStatus | None,
    path: list[Any],
    with_total: bool = False,
) -> Page[Invoice]:
    """A page of the customer's invoices (see gateway.resolvers.pages for which path);
    `with_total`: `totalCount` is selected."""
    check_page_args(first, after)
    billing_id = await billing_id_of(ctx, customer)
    if billing_id is None:
        return EMPTY_PAGE
    query = InvoiceQuery(billing_id=billing_id, first=first, after=after, status=status)
    loaders = ctx.loaders
    return await counted_page(
        ctx,
        query,
        path,
        own=loaders.invoice_page,
        indexed=loaders.invoice_page_indexed,
        count=loaders.invoice_count,
        with_total=with_total,
        pages_carry_totals=ctx.services.sources.billing.pages_carry_totals,
    )


async def customer_subscriptions(
    ctx: Context, customer: Customer, path: list[Any]
) -> list[Subscription]:
    billing_id = await billing_id_of(ctx, customer)
    if billing_id is None:
        return []
    found: list[Subscription] = await ctx.load(ctx.loaders.subscriptions, billing_id, path)
    return found


async def invoice(ctx: Context, id: str, path: list[Any]) -> Invoice:
    viewer = require_viewer(ctx)
    found: Invoice | None = await ctx.load(ctx.loaders.invoice, id, path)
    if found is None:
        raise NotFound()
    if not viewer.privileged:
        owner = await owner_of(ctx, "billing", found.billing_customer_id)
        if owner is None:
            raise NotFound()
    return found


async def invoice_customer(ctx: Context, found: Invoice) -> Customer | None:
    return await owner_of(ctx, "billing", found.billing_customer_id)


async def create_billing_portal_session(ctx: Context, return_url: str) -> BillingPortalSession:
    customer_id = require_customer(ctx)
    if not return_url.startswith(("https://", "http://")) or len(return_url) > 2048:
        raise BadUserInput("returnUrl must be an absolute http(s) URL", field="returnUrl")
    customer: Customer | None = await ctx.loaders.customer.load(customer_id)
    billing_id = await billing_id_of(ctx, customer) if customer else None
    if billing_id is None:
        raise NotFound("no billing account for this customer")
    return await ctx.services.sources.billing.create_portal_session(billing_id, return_url)
