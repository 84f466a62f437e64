"""`portal-gateway forget --customer ID`: erase one customer from everything the gateway keeps.

The same erasure a HubSpot deletion webhook runs (gateway/loaders/erasure.py) over the
shared Redis: entities, stale copies, links, whole responses, idempotency records; then
the customer's messages on the durable queue and writes in the outbox, and a
CustomerDeleted on the live channel that ends the customer's subscriptions on every
running replica.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from gateway.cache import build_cache_backend, build_entity_cache
from gateway.domain import CustomerDeleted
from gateway.events.live import RedisLiveHub
from gateway.events.runtime import build_bus, redis_client
from gateway.loaders.erasure import erase_customer
from gateway.outbox.store import RedisOutboxStore
from gateway.settings import Settings
from gateway.sources.registry import build_sources

__all__ = ["ForgetFailed", "forget_customer", "report_lines"]


class ForgetFailed(Exception):
    """Nothing (or not everything) could be erased; the message says what to do."""


async def forget_customer(settings: Settings, customer_id: str) -> dict[str, int]:
    """Erase the customer; answers what was removed, by kind (report_lines prints it)."""
    if not settings.redis_url:
        raise ForgetFailed(
            "REDIS_URL is unset: each gateway process keeps its own in-process cache, which "
            "this command cannot reach; restarting the gateway empties it"
        )
    backend = build_cache_backend(settings)
    client = redis_client(settings.redis_url)
    sources = build_sources(settings, getattr(backend, "client", None))
    try:
        if not await backend.ping():
            raise ForgetFailed("Redis is unreachable: nothing was erased; run again when it is")
        cache = build_entity_cache(settings, backend)
        removed = await erase_customer(cache, customer_id, sources.crm)
        await cache.aclose()  # the repeated purge runs now rather than in `settle` seconds
        bus = build_bus(settings, client)
        try:
            removed["queued events"] = await bus.erase_customer(customer_id)
        finally:
            await bus.aclose()
        store = RedisOutboxStore(client, settings.cache_prefix, settings.data_cipher())
        removed["outbox writes"] = await store.erase(customer_id)
        live = RedisLiveHub(client, f"{settings.cache_prefix}live", settings.data_cipher())
        event = CustomerDeleted(f"forget:{uuid.uuid4().hex}", customer_id, datetime.now(UTC))
        removed["replicas told to end live subscriptions"] = await live.tell_replicas(event)
        return removed
    finally:
        await sources.aclose()
        await backend.aclose()
        await client.aclose()


def report_lines(customer_id: str, removed: dict[str, int]) -> list[str]:
    """What the command prints: one line per kind, then the total of keys and messages."""
    erased = sum(n for kind, n in removed.items() if not kind.startswith("replicas"))
    return [
        f"forgot customer {customer_id}: {erased} keys and messages removed",
        *(f"  {kind}: {count}" for kind, count in removed.items()),
    ]
