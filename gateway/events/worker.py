"""`portal-gateway worker`: consumes the bus and sends the customers' notifications.

For each delivery: look up the customer, send what the event calls for, acknowledge.
A failed attempt is retried with full-jitter exponential backoff; after
EVENTS_MAX_ATTEMPTS attempts (or that many deliveries of one message) the message is
dead-lettered. A notification is never sent twice: its id is claimed in the cache backend
(Redis SET NX) while it is being sent, and marked sent for 7 days after; a worker that
finds it claimed by another waits for that claim to end or expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import signal
import socket
import time
from collections.abc import AsyncIterator, Sequence

from prometheus_client import start_http_server

from gateway.cache.base import CacheBackend
from gateway.domain import Customer, CustomerDeleted, DomainEvent, WriteQueued
from gateway.events.bus import Delivery, EventBus
from gateway.events.notify import Notification, Notifier, notifications_for, wants_notification
from gateway.observability import EVENTS_LAG, OUTBOX_DEAD_LETTERS
from gateway.outbox.delivery import Deliverer
from gateway.settings import Settings
from gateway.sources.base import CrmSource

__all__ = ["NotificationBusy", "Worker", "open_worker", "run_worker"]

log = logging.getLogger(__name__)

SENT_TTL = 7 * 24 * 3600
_SENDING = b"sending"
_SENT = b"sent"


class NotificationBusy(Exception):
    """Another worker holds the notification's claim: the message goes back for later."""


class Worker:
    def __init__(
        self,
        bus: EventBus,
        notifier: Notifier,
        backend: CacheBackend,
        crm: CrmSource,
        *,
        prefix: str,
        max_attempts: int = 5,
        claim_ttl: float = 60.0,
        retry_base: float = 0.2,
        retry_max: float = 5.0,
        consumer: str | None = None,
        batch: int = 10,
        outbox: Deliverer | None = None,
    ) -> None:
        self.bus = bus
        self.notifier = notifier
        self.backend = backend
        self.crm = crm
        self.prefix = prefix
        self.max_attempts = max_attempts
        self.claim_ttl = max(1, math.ceil(claim_ttl))
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch = batch
        self.outbox = outbox
        # writes handed back to the bus after a pause (gateway/outbox/delivery.py)
        self._later: dict[str, asyncio.Task[None]] = {}

    async def report_lag(self, stop: asyncio.Event, every: float = 15.0) -> None:
        """Keep gateway_events_lag_seconds{backend} current until `stop` is set."""
        gauge = EVENTS_LAG.labels(self.bus.name)
        while not stop.is_set():
            try:
                age = await self.bus.oldest_age()
            except Exception as error:  # the consumer loop reports the bus itself
                log.debug("queue age unknown: %s", type(error).__name__)
            else:
                if age is not None:
                    gauge.set(round(age, 3))
            if self.outbox is not None:
                try:
                    OUTBOX_DEAD_LETTERS.set(await self.outbox.store.dead_count())
                except Exception as error:
                    log.debug("outbox dead letters uncounted: %s", type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; a batch in hand is finished or handed back."""
        lag = asyncio.create_task(self.report_lag(stop), name="events-lag")
        stopping = asyncio.create_task(stop.wait())
        failures = 0
        try:
            while not stop.is_set():
                receiving = asyncio.create_task(
                    self.bus.receive(self.consumer, self.batch, wait=1.0)
                )
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    # stop now; whatever the backend handed out meanwhile is not acknowledged,
                    # so it is delivered again
                    receiving.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await receiving
                    break
                try:
                    deliveries = receiving.result()
                    failures = 0
                except Exception as error:
                    failures += 1
                    delay = self._backoff(min(failures, 6))
                    log.warning(
                        "event bus unavailable, retrying in %.1fs: %s",
                        delay,
                        type(error).__name__,
                    )
                    await asyncio.sleep(delay)
                    continue
                for index, delivery in enumerate(deliveries):
                    if stop.is_set():
                        await self._release_all(deliveries[index:])
                        break
                    await self.handle(delivery)
        finally:
            stopping.cancel()
            lag.cancel()
            await self._release_waiting()

    def _release_later(self, delivery: Delivery, delay: float) -> None:
        """Hand the delivery back to the bus after `delay` seconds, without holding up the
        messages behind it."""

        async def later() -> None:
            try:
                await asyncio.sleep(delay)
            finally:
                self._later.pop(delivery.message_id, None)
                await self._release_all([delivery])

        self._later[delivery.message_id] = asyncio.create_task(later())

    async def _release_waiting(self) -> None:
        """On the way out: every write waiting for its pause goes back to the bus now."""
        waiting = list(self._later.values())
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)

    async def _release_all(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            try:
                await self.bus.release(delivery)
            except Exception as error:  # the bus redelivers it after its timeout anyway
                log.warning("could not hand a message back: %s", type(error).__name__)

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.retry_max, self.retry_base * 2 ** (attempt - 1)))

    async def handle(self, delivery: Delivery) -> str:
        """Handle one delivery; answers "done", "released" or "dead"."""
        event = delivery.event
        extra = {"event_id": event.event_id, "event_type": type(event).__name__}
        if isinstance(event, WriteQueued) and self.outbox is not None and event.write:
            # a write counts its own attempts; waiting for its turn is no attempt
            try:
                outcome, delay = await self.outbox.deliver(event.write)
            except Exception as error:  # the outbox state unreachable: later, not lost
                log.warning("outbox delivery failed: %s", type(error).__name__, extra=extra)
                outcome, delay = "retry", min(self.outbox.backoff(3), self.outbox.hold)
            if outcome in ("done", "dead"):
                await self.bus.ack(delivery)
                return outcome
            self._release_later(delivery, delay)
            return "released"
        if delivery.attempt > self.max_attempts:
            reason = f"delivered {delivery.attempt} times without being completed"
            await self.bus.dead_letter(delivery, reason)
            log.error("event dead-lettered: %s", reason, extra=extra)
            return "dead"
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._process(event)
                break
            except NotificationBusy:
                await self.bus.release(delivery)
                return "released"
            except Exception as error:
                if attempt >= self.max_attempts:
                    reason = f"{type(error).__name__} after {attempt} attempts"
                    await self.bus.dead_letter(delivery, reason)
                    log.error("event dead-lettered: %s", reason, extra=extra)
                    return "dead"
                delay = self._backoff(attempt)
                log.warning(
                    "handling failed (attempt %d of %d), retrying in %.2fs: %s",
                    attempt,
                    self.max_attempts,
                    delay,
                    type(error).__name__,
                    extra=extra,
                )
                await asyncio.sleep(delay)
        await self.bus.ack(delivery)
        return "done"

    async def _process(self, event: DomainEvent) -> None:
        if isinstance(event, CustomerDeleted) and event.customer_id:
            # the gateway erased the cache when it took the event in; the queue is ours
            erased = await self.bus.erase_customer(event.customer_id)
            if self.outbox is not None:
                erased += await self.outbox.store.erase(event.customer_id)
            log.info("erased customer's queued events", extra={"erased": erased})
            return
        if isinstance(event, WriteQueued):
            # no outbox store here (REDIS_URL unset): an operator must see it, not lose it
            raise RuntimeError("a queued write needs the outbox store (REDIS_URL)")
        if event.customer_id is None or not wants_notification(event):
            return
        [found] = await self.crm.customers([event.customer_id])
        if isinstance(found, Exception):
            raise found
        if not isinstance(found, Customer):
            log.info("no such customer to notify", extra={"customer_id": event.customer_id})
            return
        for notification in notifications_for(event, found):
            await self.send_once(notification)

    async def send_once(self, notification: Notification) -> bool:
        """Send unless already sent; answers whether it was sent now."""
        key = f"{self.prefix}notify:{notification.id}"
        deadline = time.monotonic() + self.claim_ttl
        while not await self.backend.add(key, _SENDING, self.claim_ttl):
            [state] = await self.backend.get_many([key])
            if state == _SENT:
                log.info("notification already sent", extra={"notification_id": notification.id})
                return False
            if state is not None and time.monotonic() > deadline:
                raise NotificationBusy(notification.id)
            await asyncio.sleep(0.1)
        try:
            await self.notifier.send(notification)
        except BaseException:
            await self.backend.delete([key])
            raise
        await self.backend.set_many([(key, _SENT, SENT_TTL)], {})
        log.info("notification sent", extra={"notification_id": notification.id})
        return True


@contextlib.asynccontextmanager
async def open_worker(settings: Settings, consumer: str | None = None) -> AsyncIterator[Worker]:
    """The worker `settings` describe, with its bus, notifier, adapters and (with REDIS_URL)
    the outbox's delivery; all closed when the block ends."""
    from gateway.cache import build_cache_backend, build_entity_cache
    from gateway.events.live import RedisLiveHub
    from gateway.events.notify import build_notifier
    from gateway.events.runtime import build_bus, redis_client
    from gateway.outbox.store import RedisOutboxStore
    from gateway.sources.registry import build_sources

    client = redis_client(settings.redis_url) if settings.redis_url else None
    backend = build_cache_backend(settings)
    redis_for_sources = getattr(backend, "client", None)  # Redis shares its pool
    sources = build_sources(settings, redis_for_sources)
    bus = build_bus(settings, client)
    notifier = build_notifier(settings)
    consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
    outbox = None
    if client is not None and settings.outbox == "on":
        cipher = settings.data_cipher()
        outbox = Deliverer(
            RedisOutboxStore(client, settings.cache_prefix, cipher),
            bus,
            sources,
            build_entity_cache(settings, backend),
            # publishing only: the gateways' subscribers hear it through Redis
            RedisLiveHub(client, f"{settings.cache_prefix}live", cipher),
            settings,
            owner=consumer,
        )
    worker = Worker(
        bus,
        notifier,
        backend,
        sources.crm,
        prefix=settings.cache_prefix,
        max_attempts=settings.events_max_attempts,
        claim_ttl=settings.events_redelivery_timeout,
        retry_base=settings.retry_base_delay,
        retry_max=settings.retry_max_delay,
        consumer=consumer,
        outbox=outbox,
    )
    try:
        yield worker
    finally:
        await bus.aclose()
        await notifier.aclose()
        await sources.aclose()
        await backend.aclose()
        if client is not None:
            await client.aclose()


async def _serve(settings: Settings) -> None:
    if settings.worker_metrics_port:
        # the worker's own metrics (gateway_events_lag_seconds, its upstream calls)
        try:
            start_http_server(settings.worker_metrics_port)
        except OSError as error:  # a port taken costs the metrics, not the notifications
            log.error(
                "worker metrics not served on port %d: %s", settings.worker_metrics_port, error
            )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with open_worker(settings) as worker:
        log.info(
            "worker consuming",
            extra={
                "bus": worker.bus.name,
                "notify": worker.notifier.name,
                "consumer": worker.consumer,
                "outbox": worker.outbox is not None,
            },
        )
        await worker.run(stop)


def run_worker(settings: Settings) -> int:
    """The `portal-gateway worker` command; answers the exit code."""
    backend = settings.events_backend
    if backend == "memory" or (backend == "auto" and not settings.redis_url):
        log.error(
            "EVENTS_BACKEND is the in-process memory bus, which the gateway consumes itself: "
            "set REDIS_URL, or EVENTS_BACKEND=sqs or rabbitmq, to run a separate worker"
        )
        return 2
    asyncio.run(_serve(settings))
    return 0
