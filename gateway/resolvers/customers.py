"""Customers: me, customer(id), customers(ids), the federation reference, updateProfile."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from gateway.cache.codec import Codec
from gateway.context import Context
from gateway.domain import Customer, ProfileChanges
from gateway.errors import BadUserInput, NotFound
from gateway.resolvers.access import (
    check_owner,
    require_customer,
    require_privileged,
    require_viewer,
)
from gateway.resolvers.links import link_of

__all__ = ["customer", "customers", "me", "owner_of", "update_profile"]

MAX_IDS = 100
_PHONE = re.compile(r"^\+?[0-9][0-9 ().-]{5,24}$")
_customer_codec = Codec[Customer](Customer)


async def me(ctx: Context, path: list[Any]) -> Customer | None:
    viewer = require_viewer(ctx)
    if viewer.customer_id is None:
        return None
    result: Customer | None = await ctx.load(ctx.loaders.customer, viewer.customer_id, path)
    return result


async def customer(ctx: Context, id: str, path: list[Any]) -> Customer | None:
    check_owner(ctx, id)
    result: Customer | None = await ctx.load(ctx.loaders.customer, id, path)
    if result is None:
        raise NotFound()
    return result


async def customers(ctx: Context, ids: Sequence[str]) -> list[Customer | None]:
    require_privileged(ctx)
    if len(ids) > MAX_IDS:
        raise BadUserInput(f"at most {MAX_IDS} ids", field="ids")
    results = await ctx.loaders.customer.load_many(list(ids))
    # an id that failed on its own (or is unknown) is null in the list
    return [r if isinstance(r, Customer) else None for r in results]


async def owner_of(ctx: Context, system: str, external_id: str) -> Customer | None:
    """The customer whose billing or help-desk id is `external_id`, if the viewer may see it."""
    viewer = require_viewer(ctx)
    if viewer.customer_id is not None and not viewer.privileged:
        own: Customer | None = await ctx.loaders.customer.load(viewer.customer_id)
        if own is None:
            return None
        return own if await link_of(ctx, own, system) == external_id else None
    crm_id = await ctx.loaders.customer_id_by_link.load(f"{system}:{external_id}")
    if crm_id is None:
        return None
    found: Customer | None = await ctx.loaders.customer.load(crm_id)
    return found


def validate_profile(changes: ProfileChanges) -> ProfileChanges:
    name = changes.name.strip() if changes.name is not None else None
    company = changes.company.strip() if changes.company is not None else None
    phone = changes.phone.strip() if changes.phone is not None else None
    if name is not None and not name:
        raise BadUserInput("name may not be empty", field="name")
    if name is not None and len(name) > 200:
        raise BadUserInput("name is longer than 200 characters", field="name")
    if company is not None and len(company) > 200:
        raise BadUserInput("company is longer than 200 characters", field="company")
    if phone is not None and phone and not _PHONE.match(phone):
        raise BadUserInput(
            "phone must be digits with an optional leading +, spaces, dots, dashes or brackets",
            field="phone",
        )
    if name is None and company is None and phone is None:
        raise BadUserInput("nothing to update: give name, phone or company", field="input")
    return ProfileChanges(name=name, phone=phone, company=company)


async def update_profile(ctx: Context, changes: ProfileChanges) -> Customer:
    customer_id = require_customer(ctx)
    valid = validate_profile(changes)
    updated = await ctx.services.sources.crm.update_profile(customer_id, valid)
    # every cached page holding this customer goes; then write-through, so the next read
    # sees the new value at once instead of after the TTL
    await ctx.services.cache.drop_tags([f"customer:{customer_id}"])
    await ctx.services.cache.put(
        "crm", "customer", customer_id, updated, _customer_codec, tags=[f"customer:{customer_id}"]
    )
    ctx.loaders.customer.clear(customer_id).prime(customer_id, updated)
    return updated
