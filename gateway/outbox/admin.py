"""`portal-gateway outbox list|retry|drop`: what an operator does with dead letters.

A dead letter is named `{customer id}/{write id}` (as `list` prints it). `retry` puts it
back on the bus as QUEUED, its attempts and age counted afresh; `drop` forgets it (the
customer's failed item goes with it). The state lives in Redis: REDIS_URL is required.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec

from gateway.domain import DeliveryState, QueuedWrite, WriteQueued
from gateway.observability import OUTBOX_WRITES
from gateway.outbox.store import RedisOutboxStore
from gateway.outbox.writes import customer_view_changed
from gateway.settings import Settings

__all__ = ["OutboxCommandFailed", "dead_letter_lines", "drop", "list_dead", "retry"]


class OutboxCommandFailed(Exception):
    """What the command prints before exiting 1."""


async def _customer_view_changed(settings: Settings, customer_id: str) -> None:
    from gateway.cache import build_cache_backend, build_entity_cache

    backend = build_cache_backend(settings)
    cache = build_entity_cache(settings, backend)
    try:
        await customer_view_changed(cache, customer_id)
    finally:
        await cache.aclose()
        await backend.aclose()


@contextlib.asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[RedisOutboxStore]:
    from gateway.events.runtime import redis_client

    if not settings.redis_url:
        raise OutboxCommandFailed(
            "the outbox keeps its dead letters in Redis: set REDIS_URL (without it the "
            "gateway process holds them in memory, and they are in its logs)"
        )
    client = redis_client(settings.redis_url)
    try:
        yield RedisOutboxStore(client, settings.cache_prefix, settings.data_cipher())
    finally:
        await client.aclose()


def _named(name: str) -> tuple[str, str]:
    customer_id, slash, write_id = name.rpartition("/")
    if not slash or not customer_id or not write_id:
        raise OutboxCommandFailed(f"{name!r} is no dead letter's name: give CUSTOMER/WRITE")
    return customer_id, write_id


async def _dead_one(store: RedisOutboxStore, name: str) -> QueuedWrite:
    customer_id, write_id = _named(name)
    write = await store.get(customer_id, write_id)
    if write is None or write.state is not DeliveryState.FAILED:
        raise OutboxCommandFailed(f"no dead letter {name}")
    return write


async def list_dead(settings: Settings) -> list[QueuedWrite]:
    async with _store(settings) as store:
        return await store.dead()


async def retry(settings: Settings, name: str) -> QueuedWrite:
    """Queue the dead letter again; answers it as queued."""
    from gateway.events.runtime import build_bus, redis_client

    async with _store(settings) as store:
        write = await _dead_one(store, name)
        now = datetime.now(UTC)
        queued = msgspec.structs.replace(
            write,
            state=DeliveryState.QUEUED,
            reason=None,
            attempts=0,
            retried_at=now,
            not_before=None,
        )
        client = redis_client(settings.redis_url) if settings.redis_url else None
        bus = build_bus(settings, client)
        try:
            await store.put(queued)
            await bus.publish(
                WriteQueued(
                    event_id=f"retry:{write.id}:{now.timestamp()}",
                    customer_id=write.customer_id,
                    occurred_at=now,
                    write=queued,
                )
            )
        except BaseException:
            await store.put(write)  # still a dead letter: nothing was queued
            raise
        finally:
            await bus.aclose()
            if client is not None:
                await client.aclose()
        OUTBOX_WRITES.labels(write.kind.value, "retried").inc()
    await _customer_view_changed(settings, write.customer_id)
    return queued


async def drop(settings: Settings, name: str) -> QueuedWrite:
    """Forget the dead letter; answers what it was."""
    async with _store(settings) as store:
        write = await _dead_one(store, name)
        await store.drop(write.customer_id, write.id)
    await _customer_view_changed(settings, write.customer_id)
    return write


def dead_letter_lines(writes: list[QueuedWrite]) -> list[str]:
    """One line per dead letter: name, kind, acceptance time, attempts, reason."""
    if not writes:
        return ["no dead letters"]
    return [
        f"{w.customer_id}/{w.id}  {w.kind.value}  accepted {w.accepted_at:%Y-%m-%dT%H:%M:%SZ}  "
        f"attempts {w.attempts}  {w.reason}"
        for w in writes
    ]
