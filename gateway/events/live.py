"""Live fan-out to GraphQL subscriptions: in this process, and across replicas via Redis.

`LiveHub.listen(customer_id)` yields the events of one customer as they are published.
`RedisLiveHub` also publishes each event on one Redis channel and delivers what other
replicas publish there, so a webhook taken in by any replica reaches every subscriber;
what crosses Redis is sealed (DATA_ENCRYPTION_KEYS) with the channel name as associated data.
Live updates are best effort (a subscriber that was not connected misses the event);
the durable path is the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import weakref
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gateway.domain import CustomerDeleted, DomainEvent
from gateway.encryption import DataCipher, Undecryptable
from gateway.events.codec import AnyEvent
from gateway.observability import CACHE_UNDECRYPTABLE, labelled
from gateway.redis_client import RedisClient

__all__ = ["LiveHub", "LiveSubscription", "RedisLiveHub"]

log = logging.getLogger(__name__)


class LiveSubscription:
    """One subscriber's events, registered from creation until `aclose` (or until it is
    garbage: the hub holds it weakly, so an abandoned subscription cannot leak)."""

    def __init__(self, customer_id: str, queue_size: int) -> None:
        self.customer_id = customer_id
        self._queue: asyncio.Queue[DomainEvent] = asyncio.Queue(queue_size)
        self._on_close: list[Callable[[LiveSubscription], None]] = []
        self.closed = False
        self._ended = False

    def put(self, event: DomainEvent) -> None:
        if self._queue.full():  # a slow subscriber loses its oldest events, not our memory
            self._queue.get_nowait()
        self._queue.put_nowait(event)

    def __aiter__(self) -> LiveSubscription:
        return self

    async def __anext__(self) -> DomainEvent:
        if self.closed or self._ended:
            raise StopAsyncIteration
        event = await self._queue.get()
        if self._ended:
            raise StopAsyncIteration
        return event

    def end(self, why: DomainEvent) -> int:
        """Drops the events waiting here and ends the stream (its customer was erased);
        answers how many events were dropped."""
        dropped = self._queue.qsize()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._ended = True
        self._queue.put_nowait(why)  # wakes a reader waiting for the next event
        return dropped

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            for callback in self._on_close:
                callback(self)


class LiveHub:
    """Subscribers of this process, by customer."""

    def __init__(self, queue_size: int = 100) -> None:
        self.queue_size = queue_size
        self._subscribers: dict[str, weakref.WeakSet[LiveSubscription]] = {}

    def subscriber_count(self, customer_id: str | None = None) -> int:
        if customer_id is not None:
            return len(self._subscribers.get(customer_id, ()))
        return sum(len(subscribers) for subscribers in self._subscribers.values())

    def listen(self, customer_id: str) -> LiveSubscription:
        """The customer's events from now on (registered before this returns)."""
        subscription = LiveSubscription(customer_id, self.queue_size)
        subscription._on_close.append(self._remove)
        self._subscribers.setdefault(customer_id, weakref.WeakSet()).add(subscription)
        return subscription

    def _remove(self, subscription: LiveSubscription) -> None:
        subscribers = self._subscribers.get(subscription.customer_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.customer_id]

    def dispatch(self, event: DomainEvent) -> None:
        """Hand the event to this process's subscribers of its customer; a CustomerDeleted
        ends their subscriptions instead, dropping what they had not read yet."""
        if event.customer_id is None:
            return
        subscriptions = list(self._subscribers.get(event.customer_id, ()))
        if isinstance(event, CustomerDeleted):
            dropped = sum(subscription.end(event) for subscription in subscriptions)
            if subscriptions:
                log.info(
                    "live subscriptions of an erased customer ended",
                    extra={"subscriptions": len(subscriptions), "events_dropped": dropped},
                )
            return
        for subscription in subscriptions:
            subscription.put(event)

    async def publish(self, event: DomainEvent) -> None:
        self.dispatch(event)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class _Envelope(msgspec.Struct, frozen=True):
    origin: str  # the publishing process, which has already delivered the event itself
    event: DomainEvent  # decoded as one of AnyEvent by its tag


_encoder = msgspec.json.Encoder()


class _IncomingEnvelope(msgspec.Struct, frozen=True):
    origin: str
    event: AnyEvent


_decoder = msgspec.json.Decoder(_IncomingEnvelope)


class RedisLiveHub(LiveHub):
    """Also publishes on a Redis channel and delivers what other replicas publish there."""

    def __init__(
        self,
        client: RedisClient,
        channel: str,
        cipher: DataCipher,
        queue_size: int = 100,
    ) -> None:
        super().__init__(queue_size)
        self.client = client
        self.channel = channel
        self.cipher = cipher
        self._origin = secrets.token_hex(8)
        self._pubsub: redis.asyncio.client.PubSub | None = None
        self._task: asyncio.Task[None] | None = None

    async def publish(self, event: DomainEvent) -> None:
        self.dispatch(event)
        try:
            await self.tell_replicas(event)
        except (RedisError, OSError) as error:
            log.warning(
                "live update not sent to other replicas: %s",
                type(error).__name__,
                extra={"event_id": event.event_id},
            )

    async def tell_replicas(self, event: DomainEvent) -> int:
        """Publish the event (sealed) to the other replicas; answers how many listened."""
        message = _encoder.encode(_Envelope(self._origin, event))
        sealed = self.cipher.seal(message, self.channel.encode())
        listeners: Any = await self.client.publish(self.channel, sealed)
        return int(listeners)

    async def start(self) -> None:
        """Subscribe before returning, so nothing published after start-up is missed."""
        self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await self._pubsub.subscribe(self.channel)
        except (RedisError, OSError) as error:
            log.warning("live updates from other replicas unavailable: %s", type(error).__name__)
        self._task = asyncio.create_task(self._receive(self._pubsub), name="live-updates")

    async def _receive(self, pubsub: redis.asyncio.client.PubSub) -> None:
        while True:
            try:
                if not pubsub.subscribed:
                    await pubsub.subscribe(self.channel)
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (RedisError, OSError) as error:
                log.warning("live updates channel lost, retrying: %s", type(error).__name__)
                await asyncio.sleep(1.0)
                if isinstance(self.client, RedisCluster):
                    pubsub = await self._listen_elsewhere(pubsub)
                continue
            if message is None or message.get("type") != "message":
                continue
            try:
                plaintext = self.cipher.open(message["data"], self.channel.encode())
            except Undecryptable as why:
                labelled(CACHE_UNDECRYPTABLE, "live").inc()
                log.warning("ignored a live update that did not decrypt: %s", why)
                continue
            try:
                envelope = _decoder.decode(plaintext)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.warning("ignored an undecodable live update")
                continue
            if envelope.origin != self._origin:
                self.dispatch(envelope.event)

    async def _listen_elsewhere(
        self, lost: redis.asyncio.client.PubSub
    ) -> redis.asyncio.client.PubSub:
        """On a cluster a pub/sub connection stays on its node, even a dead one (a failed
        master); PUBLISH reaches every node's subscribers, so listen on another node."""
        with contextlib.suppress(RedisError, OSError):
            await lost.aclose()
        assert isinstance(self.client, RedisCluster)
        self._pubsub = self.client.pubsub(
            node=self.client.get_random_node(), ignore_subscribe_messages=True
        )
        return self._pubsub

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
