"""Publishing one domain event: to the durable bus first, then live to subscribers."""

from __future__ import annotations

from gateway.domain import DomainEvent
from gateway.events.bus import EventBus
from gateway.events.live import LiveHub
from gateway.observability import EVENTS_PUBLISHED

__all__ = ["EventPublisher"]


class EventPublisher:
    def __init__(self, bus: EventBus, live: LiveHub) -> None:
        self.bus = bus
        self.live = live

    async def publish(self, event: DomainEvent) -> None:
        """Raises when the bus could not store the event; nothing has gone live then."""
        await self.bus.publish(event)
        EVENTS_PUBLISHED.labels(type(event).__name__).inc()
        await self.live.publish(event)
