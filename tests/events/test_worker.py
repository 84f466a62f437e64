"""The notification worker against a real SMTP server: retries, dead letters, never twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from gateway.cache.memory import MemoryCache
from gateway.cache.redis import RedisCache
from gateway.domain import DomainEvent, InvoicePaid, InvoiceUpdated, TicketUpdated
from gateway.events.bus import Delivery
from gateway.events.memory import MemoryBus
from gateway.events.notify import SmtpNotifier
from gateway.events.redis_streams import RedisStreamsBus
from gateway.events.runtime import redis_client
from gateway.events.worker import Worker
from gateway.sources.sandbox import SandboxCrm, demo_data
from tests.conftest import DATA_CIPHER
from tests.events.clients import _Sink, smtp_sink, wait_for_async


@pytest.fixture
def sink() -> Iterator[tuple[str, _Sink]]:
    with smtp_sink() as running:
        yield running


def invoice_paid(event_id: str = "stripe:evt_1", customer_id: str = "1001") -> InvoicePaid:
    data = demo_data(customers=2, invoices_each=2, tickets_each=0)
    invoice = data.invoices["in_sbx0001002"]
    return InvoicePaid(
        event_id=event_id,
        customer_id=customer_id,
        occurred_at=datetime.now(UTC),
        invoice=invoice,
        billing_customer_id=invoice.billing_customer_id,
        invoice_id=invoice.id,
    )


def make_worker(
    bus: MemoryBus | RedisStreamsBus,
    smtp_url: str,
    backend: MemoryCache | RedisCache,
    *,
    max_attempts: int = 5,
    claim_ttl: float = 5.0,
    consumer: str = "w1",
    prefix: str = "pgtest:",
) -> Worker:
    return Worker(
        bus,
        SmtpNotifier(smtp_url, "portal@example.com", timeout=5),
        backend,
        SandboxCrm(demo_data(customers=3, invoices_each=0, tickets_each=0)),
        prefix=prefix,
        max_attempts=max_attempts,
        claim_ttl=claim_ttl,
        retry_base=0.01,
        retry_max=0.05,
        consumer=consumer,
    )


async def deliver(bus: MemoryBus, event: DomainEvent) -> Delivery:
    await bus.publish(event)
    [delivery] = await bus.receive("w1", 1, wait=1)
    return delivery


async def test_invoice_paid_sends_one_confirmation(sink: tuple[str, _Sink]) -> None:
    url, server = sink
    bus = MemoryBus()
    worker = make_worker(bus, url, MemoryCache())
    assert await worker.handle(await deliver(bus, invoice_paid())) == "done"
    [mail] = server.messages
    assert mail["To"] == "ada@example.com"
    assert mail["From"] == "portal@example.com"
    assert mail["Subject"] == "Payment received for invoice SBX-0001-002"
    assert "payment of 20.00 USD" in mail.get_payload()
    assert len(bus) == 0  # acknowledged


async def test_answered_ticket_notifies_the_requester_and_other_events_notify_nobody(
    sink: tuple[str, _Sink],
) -> None:
    url, server = sink
    bus = MemoryBus()
    worker = make_worker(bus, url, MemoryCache())
    now = datetime.now(UTC)
    quiet = [
        TicketUpdated(event_id="z:1", customer_id="1002", occurred_at=now, ticket_id="7"),
        InvoiceUpdated(event_id="s:2", customer_id="1002", occurred_at=now, invoice_id="in_1"),
        InvoicePaid(event_id="s:3", customer_id=None, occurred_at=now, invoice_id="in_2"),
    ]
    for event in quiet:
        assert await worker.handle(await deliver(bus, event)) == "done"
    assert server.messages == []
    answered = TicketUpdated(
        event_id="zendesk:42", customer_id="1002", occurred_at=now, ticket_id="7", answered=True
    )
    assert await worker.handle(await deliver(bus, answered)) == "done"
    [mail] = server.messages
    assert (mail["To"], mail["Subject"]) == ("grace@example.com", "New reply to your request #7")


async def test_refused_sends_are_retried_then_sent_once(sink: tuple[str, _Sink]) -> None:
    url, server = sink
    server.refuse = 2
    bus = MemoryBus()
    worker = make_worker(bus, url, MemoryCache(), max_attempts=3)
    assert await worker.handle(await deliver(bus, invoice_paid())) == "done"
    assert server.refused == 2
    assert len(server.messages) == 1
    assert len(bus) == 0


async def test_dead_lettered_after_the_configured_attempts(sink: tuple[str, _Sink]) -> None:
    url, server = sink
    server.refuse = 100
    bus = MemoryBus()
    backend = MemoryCache()
    worker = make_worker(bus, url, backend, max_attempts=3)
    event = invoice_paid()
    assert await worker.handle(await deliver(bus, event)) == "dead"
    assert server.refused == 3
    assert bus.dead == [(event, "SMTPDataError after 3 attempts")]
    assert len(bus) == 0
    # the claim was given up: an operator's replay of the dead letter would send it
    assert await backend.get_many(["pgtest:notify:invoice_paid:in_sbx0001002"]) == [None]


async def test_a_message_delivered_too_often_is_dead_lettered_unhandled(
    sink: tuple[str, _Sink],
) -> None:
    url, server = sink
    bus = MemoryBus(redelivery_timeout=0.01)
    worker = make_worker(bus, url, MemoryCache(), max_attempts=2)
    await bus.publish(invoice_paid())
    for _ in range(2):  # two consumers took it and died
        await bus.receive("dead-worker", 1, wait=1)
        await asyncio.sleep(0.02)
    [third] = await bus.receive("w1", 1, wait=1)
    assert third.attempt == 3
    assert await worker.handle(third) == "dead"
    assert server.messages == []
    assert bus.dead[0][1] == "delivered 3 times without being completed"


async def test_a_redelivered_event_is_not_notified_again(sink: tuple[str, _Sink]) -> None:
    url, server = sink
    bus = MemoryBus()
    worker = make_worker(bus, url, MemoryCache())
    assert await worker.handle(await deliver(bus, invoice_paid("stripe:evt_1"))) == "done"
    # the same message again (its ack was lost), and another event about the same payment
    assert await worker.handle(await deliver(bus, invoice_paid("stripe:evt_1"))) == "done"
    assert await worker.handle(await deliver(bus, invoice_paid("quickbooks:9"))) == "done"
    assert len(server.messages) == 1


@pytest.fixture
async def redis_backend(redis_url: str, cache_prefix: str) -> AsyncIterator[RedisCache]:
    backend = RedisCache(redis_url)
    yield backend
    await backend.aclose()


async def test_two_workers_on_one_notification_send_it_once(
    sink: tuple[str, _Sink], redis_backend: RedisCache, cache_prefix: str
) -> None:
    url, server = sink
    server.delay = 0.3  # both are inside send at once
    bus = MemoryBus()
    first = make_worker(bus, url, redis_backend, consumer="a", prefix=cache_prefix)
    second = make_worker(bus, url, redis_backend, consumer="b", prefix=cache_prefix)
    event = invoice_paid()
    await bus.publish(event)
    await bus.publish(event)  # a duplicate in the queue
    [one] = await bus.receive("a", 1)
    [two] = await bus.receive("b", 1)
    outcomes = await asyncio.gather(first.handle(one), second.handle(two))
    assert outcomes == ["done", "done"]
    assert len(server.messages) == 1


async def test_consumer_cancelled_before_ack_loses_nothing_and_sends_once(
    sink: tuple[str, _Sink], redis_url: str, cache_prefix: str, redis_backend: RedisCache
) -> None:
    url, server = sink
    server.hold_next = True
    client = redis_client(redis_url)
    stream = f"{cache_prefix}events"
    timeout = 0.5
    bus_a = RedisStreamsBus(client, stream=stream, cipher=DATA_CIPHER, redelivery_timeout=timeout)
    bus_b = RedisStreamsBus(client, stream=stream, cipher=DATA_CIPHER, redelivery_timeout=timeout)
    worker_a = make_worker(
        bus_a, url, redis_backend, consumer="a", claim_ttl=timeout, prefix=cache_prefix
    )
    worker_b = make_worker(
        bus_b, url, redis_backend, consumer="b", claim_ttl=timeout, prefix=cache_prefix
    )
    try:
        await bus_a.publish(invoice_paid())
        stop_a = asyncio.Event()
        task_a = asyncio.create_task(worker_a.run(stop_a))
        await asyncio.to_thread(server.holding.wait, 5)  # A is in the middle of sending
        task_a.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task_a
        server.release.set()
        pending = await client.xpending(stream, "portal-gateway-worker")
        assert pending["pending"] == 1  # A never acknowledged it

        stop_b = asyncio.Event()
        task_b = asyncio.create_task(worker_b.run(stop_b))
        await wait_for_async(lambda: len(server.messages) == 1, within=10)
        await asyncio.sleep(timeout * 3)  # time for any further (wrong) redelivery
        stop_b.set()
        await task_b
        assert len(server.messages) == 1
        assert (await client.xpending(stream, "portal-gateway-worker"))["pending"] == 0
    finally:
        await client.aclose()


async def test_the_worker_reports_the_queue_lag(sink: tuple[str, _Sink]) -> None:
    """gateway_events_lag_seconds{backend} follows the oldest message not yet handled."""
    url, _server = sink
    bus = MemoryBus()
    worker = make_worker(bus, url, MemoryCache())
    await bus.publish(invoice_paid())  # nobody consumes it
    await asyncio.sleep(0.2)
    stop = asyncio.Event()
    reporting = asyncio.create_task(worker.report_lag(stop, every=0.05))

    def lag() -> float | None:
        return REGISTRY.get_sample_value("gateway_events_lag_seconds", {"backend": "memory"})

    await wait_for_async(lambda: (lag() or 0) >= 0.2)
    [delivery] = await bus.receive("w1", 1, wait=1)
    await bus.ack(delivery)
    await wait_for_async(lambda: lag() == 0.0)
    stop.set()
    await reporting
