"""The per-request Context: who asks, the request's loaders, the app's services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from gateway.auth import Viewer
from gateway.cache.base import CacheBackend
from gateway.cache.entity import EntityCache
from gateway.domain import DomainEvent
from gateway.loaders import EntityLoader, Loaders
from gateway.settings import Settings
from gateway.sources.registry import Sources

__all__ = ["Context", "EventSink", "LiveUpdates", "Services"]


class LiveUpdates(Protocol):
    """Where subscriptions listen (gateway/events/live.py implements it)."""

    def listen(self, customer_id: str) -> AsyncIterator[DomainEvent]:
        """The customer's domain events from now on, until the iterator is closed."""
        ...


class EventSink(Protocol):
    """Where mutations announce what they changed (gateway/events/publisher.py)."""

    async def publish(self, event: DomainEvent) -> None:
        """Store the event on the durable bus and tell live subscribers; raises on failure."""
        ...


@dataclass(slots=True)
class Services:
    """What lives as long as the app: settings, adapters, caches, live updates."""

    settings: Settings
    sources: Sources
    backend: CacheBackend
    cache: EntityCache
    live: LiveUpdates | None = None
    events: EventSink | None = None
    outbox: Any = None  # gateway.outbox.Outbox when writes may be queued


class Context:
    """Built for each request; resolvers reach everything through it."""

    def __init__(
        self, services: Services, viewer: Viewer, request_id: str = "", request: Any = None
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.viewer = viewer
        self.request_id = request_id
        self.request = request
        self.stale: list[dict[str, Any]] = []
        # the viewer's own outbox records, read once per request (gateway/outbox/view.py)
        self.own_writes: Any = None
        self.touched_kinds: set[str] = set()
        # A customer's own answers are about that customer, whatever they loaded: erasing
        # the customer (gateway/loaders/erasure.py) drops them with its tag.
        own = viewer.customer_id if viewer.scope == f"customer:{viewer.customer_id}" else None
        self.touched_tags: set[str] = {f"customer:{own}"} if own else set()

    def _touched(self, kind: str, tags: Sequence[str]) -> None:
        self.touched_kinds.add(kind)
        self.touched_tags.update(tags)

    @cached_property
    def loaders(self) -> Loaders:
        return Loaders(
            self.services.sources,
            self.services.cache,
            batching=self.settings.gateway_batching,
            on_load=self._touched,
        )

    def renew(self) -> None:
        """Start afresh for the next event of a subscription: new loaders, no stale notes."""
        self.__dict__.pop("loaders", None)
        self.stale = []

    async def load(self, loader: EntityLoader[Any, Any], key: Hashable, path: list[Any]) -> Any:
        """loader.load(key), noting in the response when the value is a stale copy."""
        value = await loader.load(key)
        age = loader.stale.get(key)
        if age is not None:
            self.stale.append({"path": path, "source": loader.source, "age": round(age, 1)})
        return value
