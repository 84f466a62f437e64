"""Customers: me, customer(id), customers(ids), the federation reference, updateProfile."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.context import Context
from gateway.domain import Customer, ProfileChanges, QueuedWrite, WriteKind
from gateway.errors import BadUserInput, IntegrationUnavailable, NotFound
from gateway.outbox import Outbox, new_write_id
from gateway.outbox.view import own_writes, with_profile
from gateway.outbox.writes import customer_written
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


async def me(ctx: Context, path: list[Any]) -> Customer | None:
    viewer = require_viewer(ctx)
    if viewer.customer_id is None:
        return None
    result: Customer | None = await ctx.load(ctx.loaders.customer, viewer.customer_id, path)
    return await _as_written(ctx, result)


async def customer(ctx: Context, id: str, path: list[Any]) -> Customer | None:
    check_owner(ctx, id)
    result: Customer | None = await ctx.load(ctx.loaders.customer, id, path)
    if result is None:
        raise NotFound()
    return await _as_written(ctx, result)


async def _as_written(ctx: Context, found: Customer | None) -> Customer | None:
    """The customer's own view shows the profile changes still waiting in the outbox."""
    if found is None or ctx.services.outbox is None:
        return found
    writes = await own_writes(ctx, found.id)
    return with_profile(found, writes) if writes else found


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
    """Write the profile, or keep the change in the outbox while the CRM is unavailable: the
    customer then reads the changed values at once (`delivery` QUEUED)."""
    customer_id = require_customer(ctx)
    valid = validate_profile(changes)
    outbox: Outbox | None = ctx.services.outbox
    if outbox is None:
        updated = await ctx.services.sources.crm.update_profile(customer_id, valid)
    else:
        write = QueuedWrite(
            id=new_write_id(),
            kind=WriteKind.UPDATE_PROFILE,
            customer_id=customer_id,
            seq=0,
            accepted_at=datetime.now(UTC),
            idempotency_key=f"updateProfile:{customer_id}:{new_write_id()}",
            changes=valid,
        )
        done, answer = await outbox.submit(write, ctx.services.sources)
        if not isinstance(answer, Customer):
            ctx.own_writes = None  # read again: the change just queued is among them
            try:
                current = await me(ctx, [])
            except IntegrationUnavailable:  # the CRM is away for reads too: what is known
                current = with_profile(Customer(id=customer_id), [done])
            if current is None:
                raise NotFound()
            return current
        updated = answer
    await customer_written(ctx.services.cache, updated)
    ctx.loaders.customer.clear(customer_id).prime(customer_id, updated)
    return updated
