"""A customer's ids in billing and help desk: the CRM's link, else found once by email."""

from __future__ import annotations

from gateway.context import Context
from gateway.domain import Customer

__all__ = ["billing_id_of", "helpdesk_id_of", "link_of"]


async def billing_id_of(ctx: Context, customer: Customer) -> str | None:
    """The billing customer id: the CRM link, else looked up once by email (and cached)."""
    if customer.billing_id:
        return customer.billing_id
    if not customer.email:
        return None
    found: str | None = await ctx.loaders.billing_link.load((customer.email.lower(), customer.id))
    return found or None  # "": looked up, no account (cached by the loader)


async def helpdesk_id_of(ctx: Context, customer: Customer) -> str | None:
    """The help-desk user id: the CRM link, else looked up once by email (and cached)."""
    if customer.helpdesk_id:
        return customer.helpdesk_id
    if not customer.email:
        return None
    found: str | None = await ctx.loaders.helpdesk_link.load((customer.email.lower(), customer.id))
    return found or None  # "": looked up, no account (cached by the loader)


async def link_of(ctx: Context, customer: Customer, system: str) -> str | None:
    """The customer's id in `system` ("billing" or "helpdesk")."""
    if system == "billing":
        return await billing_id_of(ctx, customer)
    return await helpdesk_id_of(ctx, customer)
