"""Wiring: the configured bus, live hub and publisher, and the app's in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.cache.base import CacheBackend
from gateway.context import Services
from gateway.events.bus import EventBus
from gateway.events.live import LiveHub, RedisLiveHub
from gateway.events.memory import MemoryBus
from gateway.events.notify import build_notifier
from gateway.events.publisher import EventPublisher
from gateway.events.worker import Worker
from gateway.outbox import Outbox
from gateway.outbox.delivery import Deliverer
from gateway.outbox.store import MemoryOutboxStore, OutboxStore, RedisOutboxStore
from gateway.redis_client import RedisClient, connect, slot_group
from gateway.settings import Settings
from gateway.sources.base import CrmSource

__all__ = ["EventRuntime", "build_bus", "build_outbox", "redis_client"]

log = logging.getLogger(__name__)


def redis_client(url: str) -> RedisClient:
    """A client for the bus and pub/sub: longer timeouts than the cache's (blocking reads);
    one node or a cluster, as REDIS_URL says."""
    return connect(
        url, protocol=2, socket_timeout=10, socket_connect_timeout=2, health_check_interval=30
    )


def build_bus(settings: Settings, client: RedisClient | None) -> EventBus:
    """The bus EVENTS_BACKEND names (auto: Redis Streams with REDIS_URL, else in-process)."""
    backend = settings.events_backend
    if backend == "auto":
        backend = "redis" if settings.redis_url else "memory"
    timeout = settings.events_redelivery_timeout
    if backend == "redis":
        if client is None:
            raise ValueError("EVENTS_BACKEND=redis needs REDIS_URL")
        from gateway.events.redis_streams import RedisStreamsBus

        return RedisStreamsBus(
            client,
            # the stream and its dead letters share a slot on a cluster (one MULTI moves a
            # message from one to the other)
            stream=slot_group(f"{settings.cache_prefix}events", client),
            cipher=settings.data_cipher(),
            redelivery_timeout=timeout,
        )
    if backend == "sqs":
        if not settings.sqs_queue_url:
            raise ValueError("EVENTS_BACKEND=sqs needs SQS_QUEUE_URL")
        from gateway.events.sqs import SqsBus

        return SqsBus(
            settings.sqs_queue_url,
            region=settings.aws_region,
            cipher=settings.data_cipher(),
            dead_letter_url=settings.sqs_dead_letter_url,
            redelivery_timeout=timeout,
        )
    if backend == "rabbitmq":
        if not settings.rabbitmq_url:
            raise ValueError("EVENTS_BACKEND=rabbitmq needs RABBITMQ_URL")
        from gateway.events.rabbitmq import RabbitMQBus

        return RabbitMQBus(
            settings.rabbitmq_url, queue=settings.rabbitmq_queue, cipher=settings.data_cipher()
        )
    return MemoryBus(redelivery_timeout=timeout)


def build_outbox(settings: Settings, runtime: EventRuntime, services: Services) -> Outbox | None:
    """The outbox of provider writes, on the runtime's bus; its state in Redis (REDIS_URL),
    or in this process with the memory bus. None when OUTBOX=off, or with SQS or RabbitMQ
    but no Redis to share the state in: writes then fail while their provider is away."""
    if settings.outbox == "off":
        return None
    store: OutboxStore
    if runtime.client is not None:
        store = RedisOutboxStore(runtime.client, settings.cache_prefix, settings.data_cipher())
    elif isinstance(runtime.bus, MemoryBus):
        store = MemoryOutboxStore()
    else:
        log.warning(
            "outbox off: EVENTS_BACKEND=%s needs REDIS_URL for the outbox's state",
            runtime.bus.name,
        )
        return None
    if runtime.worker is not None:
        runtime.worker.outbox = Deliverer(
            store,
            runtime.bus,
            services.sources,
            services.cache,
            runtime.live,
            settings,
            owner=runtime.worker.consumer,
        )
    return Outbox(store, runtime.bus, services.cache)


class EventRuntime:
    """What the app holds: bus, live hub, publisher; with the memory bus, its own worker."""

    def __init__(self, settings: Settings, backend: CacheBackend, crm: CrmSource) -> None:
        self.client = redis_client(settings.redis_url) if settings.redis_url else None
        self.bus = build_bus(settings, self.client)
        self.live: LiveHub = (
            RedisLiveHub(self.client, f"{settings.cache_prefix}live", settings.data_cipher())
            if self.client is not None
            else LiveHub()
        )
        self.publisher = EventPublisher(self.bus, self.live)
        # nobody else can reach an in-process queue: the app consumes it itself
        self.worker = (
            Worker(
                self.bus,
                build_notifier(settings),
                backend,
                crm,
                prefix=settings.cache_prefix,
                max_attempts=settings.events_max_attempts,
                claim_ttl=settings.events_redelivery_timeout,
                retry_base=settings.retry_base_delay,
                retry_max=settings.retry_max_delay,
                consumer="in-process",
            )
            if isinstance(self.bus, MemoryBus)
            else None
        )
        self._stop = asyncio.Event()
        self._worker_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.live.start()
        if self.worker is not None:
            self._stop.clear()
            self._worker_task = asyncio.create_task(self.worker.run(self._stop), name="worker")

    async def aclose(self) -> None:
        task, self._worker_task = self._worker_task, None
        if task is not None and self.worker is not None:
            self._stop.set()
            try:
                await asyncio.wait_for(task, 5)
            except TimeoutError:
                log.warning("in-process worker did not stop in time")
            await self.worker.notifier.aclose()
        await self.live.aclose()
        await self.bus.aclose()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
