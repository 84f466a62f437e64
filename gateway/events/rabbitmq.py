"""The RabbitMQ bus (aio-pika): one durable quorum queue, consumers with manual acks.

Messages are persistent and published with confirms, so `publish` returns once the broker
has them. A message whose consumer's connection goes away unacknowledged is requeued by
the broker; the quorum queue's `x-delivery-count` header gives the attempt number.
Dead letters go to the queue `{RABBITMQ_QUEUE}.dead` with the reason in a header.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from gateway.domain import DomainEvent
from gateway.encryption import DataCipher
from gateway.events.bus import Delivery
from gateway.events.codec import UNREADABLE, open_event, seal_event

__all__ = ["RabbitMQBus"]

log = logging.getLogger(__name__)

_QUEUE_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum"}


class RabbitMQBus:
    name = "rabbitmq"

    def __init__(self, url: str, *, queue: str, cipher: DataCipher, prefetch: int = 10) -> None:
        self.url = url
        self.cipher = cipher
        self.queue_name = queue
        self.dead_queue_name = f"{queue}.dead"
        self.prefetch = prefetch
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._consuming = False
        self._lock = asyncio.Lock()

    async def _open(self) -> tuple[AbstractChannel, AbstractQueue]:
        async with self._lock:
            if self._channel is None or self._queue is None:
                connection = await aio_pika.connect_robust(self.url)
                try:
                    channel = await connection.channel(publisher_confirms=True)
                    await channel.set_qos(prefetch_count=self.prefetch)
                    queue = await channel.declare_queue(
                        self.queue_name, durable=True, arguments=_QUEUE_ARGUMENTS
                    )
                    await channel.declare_queue(
                        self.dead_queue_name, durable=True, arguments=_QUEUE_ARGUMENTS
                    )
                except BaseException:
                    await connection.close()
                    raise
                self._connection, self._channel, self._queue = connection, channel, queue
            return self._channel, self._queue

    async def publish(self, event: DomainEvent) -> None:
        channel, _queue = await self._open()
        await channel.default_exchange.publish(
            aio_pika.Message(
                seal_event(self.cipher, self.queue_name, event),
                content_type="application/octet-stream",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=event.event_id,
                type=type(event).__name__,
            ),
            routing_key=self.queue_name,
        )

    async def receive(
        self, consumer: str, max_messages: int = 10, wait: float = 1.0
    ) -> list[Delivery]:
        _channel, queue = await self._open()
        if not self._consuming:
            self._consuming = True
            await queue.consume(self._buffer.put, no_ack=False, consumer_tag=None)
        messages: list[AbstractIncomingMessage] = []
        try:
            messages.append(await asyncio.wait_for(self._buffer.get(), wait))
        except TimeoutError:
            return []
        while len(messages) < max_messages and not self._buffer.empty():
            messages.append(self._buffer.get_nowait())
        deliveries: list[Delivery] = []
        for message in messages:
            count = (message.headers or {}).get("x-delivery-count")
            # a quorum queue counts deliveries; elsewhere "redelivered" is all we know
            attempt = count + 1 if isinstance(count, int) else 2 if message.redelivered else 1
            try:
                event = open_event(self.cipher, self.queue_name, message.body)
            except UNREADABLE as error:
                log.error("undecodable message dead-lettered", extra={"amqp": message.message_id})
                await self._move_aside(message, message.body, f"undecodable: {error}")
                continue
            deliveries.append(
                Delivery(message.message_id or str(message.delivery_tag), event, attempt, message)
            )
        return deliveries

    async def ack(self, delivery: Delivery) -> None:
        message: AbstractIncomingMessage = delivery.receipt
        await message.ack()

    async def release(self, delivery: Delivery) -> None:
        message: AbstractIncomingMessage = delivery.receipt
        await message.nack(requeue=True)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        body = seal_event(self.cipher, self.dead_queue_name, delivery.event)
        await self._move_aside(delivery.receipt, body, reason)

    async def _move_aside(self, message: AbstractIncomingMessage, body: bytes, reason: str) -> None:
        channel, _queue = await self._open()
        await channel.default_exchange.publish(
            aio_pika.Message(
                body,
                content_type="application/octet-stream",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message.message_id,
                headers={"x-reason": reason[:1000]},
            ),
            routing_key=self.dead_queue_name,
        )
        await message.ack()

    async def erase_customer(self, customer_id: str) -> int:
        return 0  # a queue deletes only what it handed out (EventBus.erase_customer)

    async def oldest_age(self) -> float | None:
        # AMQP tells no message ages: the broker's own metrics (rabbitmq_prometheus) do
        return None

    async def aclose(self) -> None:
        """Close the connection: messages received and not acknowledged go back to the queue."""
        connection, self._connection = self._connection, None
        self._channel = self._queue = None
        self._consuming = False
        if connection is not None:
            await connection.close()
