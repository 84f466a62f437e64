"""A customer's page of invoices or tickets: which path reads it, and its total.

A customer's own portal reads the provider's per-customer list, which shows what a webhook
changed at once. A privileged viewer (staff, services) reading first pages goes through the
`*_indexed` loaders, which for a view of many customers read the provider's search index
(fewest calls, a lag of up to a minute or more: docs/design.md section 11), cached apart
from the customer's own pages. A total is asked of the provider only when `totalCount` is
selected and the page does not carry one: beside the page where the provider's list pages
carry none past a whole first page (Stripe, Zendesk: `pages_carry_totals` False), so the
count costs a call but no round trip; after the page elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

import msgspec

from gateway.context import Context
from gateway.domain import InvoiceQuery, Page, TicketQuery
from gateway.errors import GatewayError
from gateway.loaders import EntityLoader

__all__ = ["EMPTY_PAGE", "counted_page"]

# the page of a customer without an account at the provider (never mutated)
EMPTY_PAGE: Page[Any] = Page(items=[], next_cursor=None, total_count=0)

log = logging.getLogger(__name__)

Q = TypeVar("Q", InvoiceQuery, TicketQuery)


async def counted_page(
    ctx: Context,
    query: Q,
    path: list[Any],
    *,
    own: EntityLoader[Q, Page[Any]],
    indexed: EntityLoader[Q, Page[Any]],
    count: EntityLoader[Q, int],
    with_total: bool,
    pages_carry_totals: bool,
) -> Page[Any]:
    """The page `query` asks for; with `with_total`, its `total_count` filled in where the
    provider can say (a failed count leaves it null rather than failing the page)."""
    staff_view = ctx.viewer.privileged and query.after is None
    loader = indexed if staff_view else own
    page: Page[Any]
    total: int | None = None
    if with_total and not pages_carry_totals and not staff_view:
        page, total = await asyncio.gather(
            ctx.load(loader, query, path), _total(ctx, count, query, path)
        )
    else:
        page = await ctx.load(loader, query, path)
        if with_total and page.total_count is None:
            total = await _total(ctx, count, query, path)
    if page.total_count is not None or total is None:
        return page
    return msgspec.structs.replace(page, total_count=total)


async def _total(
    ctx: Context, count: EntityLoader[Q, int], query: Q, path: list[Any]
) -> int | None:
    try:
        total: int | None = await ctx.load(count, query, path)
    except GatewayError as exc:
        log.warning("a list's total could not be read: %s", type(exc).__name__)
        return None
    return total
