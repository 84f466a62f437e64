"""The durable event bus: the protocol every backend implements, and what it hands out.

Semantics shared by every backend (tests/events/test_bus.py runs one suite against each):
at-least-once delivery to one consumer of a group; a message received but neither
acknowledged nor dead-lettered is delivered again, to this or another consumer, once its
consumer is gone or `redelivery_timeout` seconds have passed (RabbitMQ: once the
consumer's connection is gone); `Delivery.attempt` counts deliveries, 1 the first time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gateway.domain import DomainEvent

__all__ = ["Delivery", "EventBus"]


@dataclass(slots=True, eq=False)
class Delivery:
    """One delivery of one message; `receipt` is the backend's handle to acknowledge it."""

    message_id: str
    event: DomainEvent
    attempt: int
    receipt: Any = None


class EventBus(Protocol):
    name: str  # "memory", "redis", "sqs", "rabbitmq"

    async def publish(self, event: DomainEvent) -> None:
        """Store the event durably; raises when it could not be stored."""
        ...

    async def receive(
        self, consumer: str, max_messages: int = 10, wait: float = 1.0
    ) -> list[Delivery]:
        """Up to `max_messages` deliveries, waiting at most `wait` seconds for the first."""
        ...

    async def ack(self, delivery: Delivery) -> None:
        """Done with the message: it is never delivered again."""
        ...

    async def release(self, delivery: Delivery) -> None:
        """Hand an unfinished message back for redelivery (as soon as the backend allows)."""
        ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the message aside for an operator, then acknowledge it."""
        ...

    async def oldest_age(self) -> float | None:
        """Seconds since the oldest message neither acknowledged nor dead-lettered was
        published (0 when there is none); None where the backend cannot tell (SQS, RabbitMQ:
        their own metrics tell, docs/operations.md)."""
        ...

    async def erase_customer(self, customer_id: str) -> int:
        """Delete the stored messages (waiting, and dead letters) concerning the customer;
        answers how many. SQS and RabbitMQ cannot delete one message they have not handed
        out: they answer 0, and their messages are sealed and leave once handled."""
        ...

    async def aclose(self) -> None: ...
