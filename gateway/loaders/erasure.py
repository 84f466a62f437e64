"""Erasing a customer from the cache: entities, stale copies, links and whole responses.

What the cache knows of the customer names the rest: its CRM record (fresh or stale copy,
else the CRM itself) gives its email and linked billing and help-desk ids; the links found
by email are read for ids the record lacks. Then one purge drops every entry tagged with
the customer, its files, or those ids (entities, pages and the customer's own responses),
and the untagged keys named here. The durable queue and live subscriptions are the
events' business (gateway/webhooks/intake.py, gateway/events/).
"""

from __future__ import annotations

import logging
from collections import Counter

from gateway.cache.entity import EntityCache
from gateway.domain import Customer
from gateway.loaders.entity import CUSTOMER_CODEC, LINK_CODEC
from gateway.sources.base import CrmSource

__all__ = ["ERASED_KINDS", "erase_customer"]

log = logging.getLogger(__name__)

# the kinds an erasure reports, in the order it reports them
ERASED_KINDS = (
    "entities",
    "stale copies",
    "links",
    "response pages",
    "idempotency records",
    "other",
)


def _kind_of(key: str, prefix: str) -> str:
    rest = key[len(prefix) :] if key.startswith(prefix) else key
    parts = rest.split(":")
    if parts[0] == "resp":
        return "response pages"
    if parts[0] == "idem":
        return "idempotency records"
    if len(parts) > 1 and parts[1] == "link":
        return "links"
    if len(parts) > 1 and parts[1] == "changed":
        return "other"
    if parts[0] in ("crm", "billing", "helpdesk", "files"):
        return "stale copies" if parts[-1] == "stale" else "entities"
    return "other"


async def _record(cache: EntityCache, crm: CrmSource | None, customer_id: str) -> Customer | None:
    key = cache.key("crm", "customer", customer_id)
    for data in await cache.backend.get_many([key, key + ":stale"]):
        decoded = CUSTOMER_CODEC.decode(data) if data is not None else None
        if decoded is not None:
            return decoded[0]
    if crm is None:
        return None
    try:
        [found] = await crm.customers([customer_id])
    except Exception as error:  # erasing what the cache holds does not need the CRM
        log.warning("erasure: the CRM record could not be read: %s", type(error).__name__)
        return None
    return found if isinstance(found, Customer) else None


async def erase_customer(
    cache: EntityCache, customer_id: str, crm: CrmSource | None = None
) -> dict[str, int]:
    """Drops everything the cache holds about the customer; answers how many keys of each
    kind (ERASED_KINDS) were removed. `crm` is asked for the record only when the cache no
    longer holds it (a deleted customer's record is gone there)."""
    record = await _record(cache, crm, customer_id)
    # owner: what only erasure drops (idempotency records, gateway/resolvers/tickets.py)
    tags = [f"customer:{customer_id}", f"files:{customer_id}", f"owner:{customer_id}"]
    keys = [cache.key("crm", "customer", customer_id)]
    linked: dict[str, set[str]] = {"billing": set(), "helpdesk": set()}
    if record is not None:
        if record.billing_id:
            linked["billing"].add(record.billing_id)
        if record.helpdesk_id:
            linked["helpdesk"].add(record.helpdesk_id)
        if record.email:
            # written before a key rotation, a link carries an older pseudonym
            for pseudonym in cache.cipher.pseudonyms(record.email.lower()):
                by_email = [cache.key(system, "link", pseudonym) for system in linked]
                keys.extend(by_email)
                stored = await cache.backend.get_many(by_email + [k + ":stale" for k in by_email])
                for index, data in enumerate(stored):
                    decoded = LINK_CODEC.decode(data) if data is not None else None
                    if decoded is not None and decoded[0]:
                        linked[list(linked)[index % 2]].add(decoded[0])
    for system, ids in linked.items():
        for id in sorted(ids):
            tags.append(f"{system}:{id}")
            keys.append(cache.key("crm", "link", f"{system}:{id}"))
    keys += [key + ":stale" for key in keys]
    # the marks that send a recently changed owner's staff pages to the lists (issue 27)
    keys += [cache.key(system, "changed", id) for system, ids in linked.items() for id in ids]
    removed = await cache.erase(tags, keys)
    counts = Counter(_kind_of(key, cache.prefix) for key in removed)
    return {kind: counts.get(kind, 0) for kind in ERASED_KINDS}
