"""One behaviour suite, run against every event bus backend: publish, receive, ack,
redelivery of what was not acknowledged, release, dead letters."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import boto3
import msgspec
import pytest

from gateway.domain import (
    DomainEvent,
    FileDeleted,
    InvoicePaid,
    InvoiceStatus,
    TicketUpdated,
)
from gateway.events.bus import Delivery, EventBus
from gateway.events.codec import decode_event, open_event
from gateway.events.memory import MemoryBus
from gateway.events.rabbitmq import RabbitMQBus
from gateway.events.redis_streams import RedisStreamsBus
from gateway.events.runtime import redis_client
from gateway.events.sqs import SqsBus
from gateway.redis_client import slot_group
from tests.conftest import DATA_CIPHER
from tests.events.conftest import REGION

TIMEOUT = 0.3  # redelivery timeout of the buses under test (SQS: 1, it counts whole seconds)


def event(n: int) -> DomainEvent:
    now = datetime(2026, 11, 28, 4, 0, n, tzinfo=UTC)
    kinds: list[Callable[[], DomainEvent]] = [
        lambda: InvoicePaid(
            event_id=f"e{n}", customer_id="1001", occurred_at=now, invoice_id="in_1"
        ),
        lambda: TicketUpdated(
            event_id=f"e{n}", customer_id="1002", occurred_at=now, ticket_id="7", answered=True
        ),
        lambda: FileDeleted(event_id=f"e{n}", customer_id=None, occurred_at=now, file_id="f_x"),
    ]
    return kinds[n % len(kinds)]()


class Backend:
    """Opens handles on one queue of one backend, the way separate consumers would."""

    name = ""
    timeout = TIMEOUT

    @property
    def quiet_period(self) -> float:
        """Long enough for anything unacknowledged to have come back."""
        return self.timeout + 0.4

    async def new(self) -> EventBus:
        raise NotImplementedError

    async def abandon(self, bus: EventBus) -> None:
        """The consumer dies without acknowledging (the default: it just stops)."""

    async def dead_letters(self) -> list[tuple[DomainEvent, str]]:
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the backend opened."""


class Memory(Backend):
    name = "memory"

    def __init__(self) -> None:
        self.bus = MemoryBus(redelivery_timeout=self.timeout)

    async def new(self) -> EventBus:
        return self.bus  # one process: every consumer shares the queue object

    async def dead_letters(self) -> list[tuple[DomainEvent, str]]:
        return list(self.bus.dead)


class Redis(Backend):
    name = "redis"

    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis_client(url)
        self.stream = slot_group(f"{prefix}events", self.client)

    async def new(self) -> EventBus:
        return RedisStreamsBus(
            self.client, stream=self.stream, cipher=DATA_CIPHER, redelivery_timeout=self.timeout
        )

    async def dead_letters(self) -> list[tuple[DomainEvent, str]]:
        entries: Any = await self.client.xrange(f"{self.stream}:dead")
        dead = f"{self.stream}:dead"
        return [
            (open_event(DATA_CIPHER, dead, f[b"e"]), f[b"reason"].decode()) for _id, f in entries
        ]

    async def close(self) -> None:
        await self.client.aclose()


class Sqs(Backend):
    name = "sqs"
    timeout = 1.0

    def __init__(self, endpoint: str, queue: str, dead: str) -> None:
        self.endpoint, self.queue, self.dead = endpoint, queue, dead
        self.buses: list[SqsBus] = []

    async def new(self) -> EventBus:
        bus = SqsBus(
            self.queue,
            region=REGION,
            cipher=DATA_CIPHER,
            dead_letter_url=self.dead,
            endpoint_url=self.endpoint,
            redelivery_timeout=self.timeout,
        )
        self.buses.append(bus)
        return bus

    async def dead_letters(self) -> list[tuple[DomainEvent, str]]:
        client: Any = boto3.client("sqs", region_name=REGION, endpoint_url=self.endpoint)
        try:
            response = await asyncio.to_thread(
                client.receive_message,
                QueueUrl=self.dead,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
            )
        finally:
            client.close()
        return [
            (
                open_event(DATA_CIPHER, self.dead, base64.b64decode(m["Body"])),
                m["MessageAttributes"]["reason"]["StringValue"],
            )
            for m in response.get("Messages", [])
        ]

    async def close(self) -> None:
        for bus in self.buses:
            await bus.aclose()


class RabbitMQ(Backend):
    name = "rabbitmq"

    def __init__(self, url: str) -> None:
        self.url = url
        self.queue = f"pgtest-{uuid.uuid4().hex[:10]}"
        self.buses: list[RabbitMQBus] = []

    async def new(self) -> EventBus:
        bus = RabbitMQBus(self.url, queue=self.queue, cipher=DATA_CIPHER)
        self.buses.append(bus)
        return bus

    async def abandon(self, bus: EventBus) -> None:
        await bus.aclose()  # its connection goes: the broker requeues what it held

    async def dead_letters(self) -> list[tuple[DomainEvent, str]]:
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"{self.queue}.dead", passive=True)
            found: list[tuple[DomainEvent, str]] = []
            while (message := await queue.get(fail=False, no_ack=True)) is not None:
                dead = open_event(DATA_CIPHER, f"{self.queue}.dead", message.body)
                found.append((dead, str(message.headers["x-reason"])))
            return found
        finally:
            await connection.close()

    async def close(self) -> None:
        for bus in self.buses:
            await bus.aclose()
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel()
            for name in (self.queue, f"{self.queue}.dead"):
                await channel.queue_delete(name)
        finally:
            await connection.close()


@pytest.fixture(params=["memory", "redis", "redis-cluster", "sqs", "rabbitmq"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    chosen: Backend
    if request.param == "memory":
        chosen = Memory()
    elif request.param.startswith("redis"):
        url = "redis_cluster_url" if request.param == "redis-cluster" else "redis_url"
        chosen = Redis(request.getfixturevalue(url), request.getfixturevalue("cache_prefix"))
    elif request.param == "sqs":
        queue, dead = request.getfixturevalue("sqs_queues")
        chosen = Sqs(request.getfixturevalue("moto_url"), queue, dead)
    else:
        chosen = RabbitMQ(request.getfixturevalue("rabbitmq_url"))
    try:
        yield chosen
    finally:
        await chosen.close()


async def receive_until(
    bus: EventBus, consumer: str, count: int, within: float = 5.0
) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + within
    while len(got) < count and (left := deadline - time.monotonic()) > 0:
        got += await bus.receive(consumer, max_messages=count - len(got), wait=min(left, 0.5))
    return got


async def test_published_events_arrive_intact_and_acked_ones_never_return(
    backend: Backend,
) -> None:
    bus = await backend.new()
    sent = [event(n) for n in range(3)]
    for one in sent:
        await bus.publish(one)
    got = await receive_until(bus, "c1", 3)
    assert sorted((d.event for d in got), key=lambda e: e.event_id) == sent
    assert {type(d.event) for d in got} == {InvoicePaid, TicketUpdated, FileDeleted}
    assert [d.attempt for d in got] == [1, 1, 1]
    for delivery in got:
        await bus.ack(delivery)
    assert await receive_until(bus, "c1", 1, within=backend.quiet_period) == []


async def test_unacknowledged_message_is_redelivered_when_its_consumer_dies(
    backend: Backend,
) -> None:
    first = await backend.new()
    done, pending = event(0), event(1)
    await first.publish(done)
    await first.publish(pending)
    got = {d.event.event_id: d for d in await receive_until(first, "doomed", 2)}
    assert set(got) == {"e0", "e1"}
    await first.ack(got["e0"])
    await backend.abandon(first)  # dies holding e1

    second = await backend.new()
    [again] = await receive_until(second, "survivor", 1, within=backend.timeout + 3)
    assert again.event == pending
    assert again.attempt == 2
    # dead-lettering acknowledges too: nothing comes back, and the reason is kept
    await second.dead_letter(again, "SMTPDataError after 5 attempts")
    assert await receive_until(second, "survivor", 1, within=backend.quiet_period) == []
    assert await backend.dead_letters() == [(pending, "SMTPDataError after 5 attempts")]


async def test_released_message_comes_back_without_waiting_for_the_timeout(
    backend: Backend,
) -> None:
    bus = await backend.new()
    await bus.publish(event(4))
    [delivery] = await receive_until(bus, "c1", 1)
    await bus.release(delivery)
    [again] = await receive_until(bus, "c1", 1, within=backend.timeout)
    assert again.event == event(4)
    assert again.attempt == 2
    await bus.ack(again)


async def test_oldest_age_covers_waiting_and_unacknowledged_messages(backend: Backend) -> None:
    """What gateway_events_lag_seconds reports: the memory and Redis backends tell the age
    of the oldest message not yet acknowledged; SQS and RabbitMQ cannot (None)."""
    bus = await backend.new()
    if backend.name in ("sqs", "rabbitmq"):
        await bus.publish(event(5))
        assert await bus.oldest_age() is None
        await bus.ack((await receive_until(bus, "c1", 1))[0])
        return
    assert await bus.oldest_age() == 0.0
    await bus.publish(event(5))
    await asyncio.sleep(0.25)
    waiting = await bus.oldest_age()
    assert waiting is not None
    assert 0.2 <= waiting < 5
    await bus.publish(event(6))
    [first, second] = await receive_until(bus, "c1", 2)
    held = await bus.oldest_age()  # handed out, not acknowledged: still counted
    assert held is not None
    assert held >= waiting
    await bus.ack(first if first.event.event_id == "e5" else second)
    younger = await bus.oldest_age()
    assert younger is not None
    assert younger < held
    await bus.ack(second if first.event.event_id == "e5" else first)
    assert await bus.oldest_age() == 0.0


def test_every_domain_event_type_is_decodable() -> None:
    """A new event type in gateway/domain.py must join the codec's union."""
    from gateway.events.codec import EVENT_TYPES, encode_event

    assert set(EVENT_TYPES) == set(DomainEvent.__subclasses__())
    for kind in EVENT_TYPES:
        sample = kind(event_id="x", customer_id=None, occurred_at=datetime.now(UTC))
        assert decode_event(encode_event(sample)) == sample
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"type": "Nope", "event_id": "x"}')
    assert InvoiceStatus.PAID.value == "PAID"
