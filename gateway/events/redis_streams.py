"""The Redis Streams bus: one stream, one consumer group of workers.

A message is XADDed to `{CACHE_PREFIX}events`; workers read it with XREADGROUP and XACK it
when done. A message that stays pending longer than `redelivery_timeout` (its consumer died
or hangs) is taken over by another worker with XAUTOCLAIM. Dead letters go to
`{CACHE_PREFIX}events:dead` with the reason. Each entry's event is sealed
(DATA_ENCRYPTION_KEYS) with its stream's name as associated data.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import ResponseError

from gateway.domain import DomainEvent
from gateway.encryption import DataCipher
from gateway.events.bus import Delivery
from gateway.events.codec import UNREADABLE, open_event, seal_event
from gateway.redis_client import RedisClient

__all__ = ["RedisStreamsBus"]

log = logging.getLogger(__name__)

GROUP = "portal-gateway-worker"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStreamsBus:
    """`EventBus` over a Redis stream; the client (RESP2, bytes) is owned by the caller."""

    name = "redis"

    def __init__(
        self,
        client: RedisClient,
        *,
        stream: str,
        cipher: DataCipher,
        group: str = GROUP,
        redelivery_timeout: float = 60.0,
        max_length: int = 1_000_000,
    ) -> None:
        self.client = client
        self.stream = stream
        self.cipher = cipher
        self.dead_stream = f"{stream}:dead"
        self.group = group
        self.redelivery_timeout = redelivery_timeout
        self.max_length = max_length
        self._group_ready = False
        self._next_claim = 0.0
        # how often to look for messages a dead consumer left pending
        self._claim_every = min(max(redelivery_timeout / 4, 0.1), 5.0)

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # from id 0: messages published before the first worker started are not skipped
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    async def publish(self, event: DomainEvent) -> None:
        await self._ensure_group()
        await self.client.xadd(
            self.stream,
            {"e": seal_event(self.cipher, self.stream, event)},
            maxlen=self.max_length,
            approximate=True,
        )

    async def receive(
        self, consumer: str, max_messages: int = 10, wait: float = 1.0
    ) -> list[Delivery]:
        await self._ensure_group()
        try:
            return await self._receive(consumer, max_messages, wait)
        except ResponseError as error:
            if "NOGROUP" in str(error):  # stream or group deleted under us: create again
                self._group_ready = False
                return []
            raise

    async def _receive(self, consumer: str, max_messages: int, wait: float) -> list[Delivery]:
        deliveries: list[Delivery] = []
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self._claim_every
            deliveries = await self._claim_abandoned(consumer, max_messages)
        if len(deliveries) < max_messages:
            block = int(wait * 1000) if not deliveries and wait > 0 else None
            response: Any = await self.client.xreadgroup(
                self.group,
                consumer,
                {self.stream: ">"},
                count=max_messages - len(deliveries),
                block=block,
            )
            for _stream, entries in response or []:
                for message_id, fields in entries:
                    delivery = await self._delivery(_text(message_id), fields, 1, consumer)
                    if delivery is not None:
                        deliveries.append(delivery)
        return deliveries

    async def _claim_abandoned(self, consumer: str, max_messages: int) -> list[Delivery]:
        claimed: Any = await self.client.xautoclaim(
            self.stream,
            self.group,
            consumer,
            min_idle_time=int(self.redelivery_timeout * 1000),
            start_id="0-0",
            count=max_messages,
        )
        entries = [(_text(i), f) for i, f in claimed[1] if f is not None]
        if not entries:
            return []
        pending: Any = await self.client.xpending_range(
            self.stream,
            self.group,
            min=entries[0][0],
            max=entries[-1][0],
            count=max(len(entries) * 4, 100),
            consumername=consumer,
        )
        counts = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        deliveries: list[Delivery] = []
        for message_id, fields in entries:
            delivery = await self._delivery(message_id, fields, counts.get(message_id, 2), consumer)
            if delivery is not None:
                log.info(
                    "took over a message another consumer left unacknowledged",
                    extra={"message_id": message_id, "attempt": delivery.attempt},
                )
                deliveries.append(delivery)
        return deliveries

    async def _delivery(
        self, message_id: str, fields: dict[bytes, bytes], attempt: int, consumer: str
    ) -> Delivery | None:
        raw = fields.get(b"e", b"")
        try:
            event = open_event(self.cipher, self.stream, raw)
        except UNREADABLE as error:
            log.error("undecodable message dead-lettered", extra={"message_id": message_id})
            await self._move_aside(message_id, raw, f"undecodable: {error}", attempt)
            return None
        return Delivery(message_id, event, attempt, consumer)

    async def ack(self, delivery: Delivery) -> None:
        await self.client.xack(self.stream, self.group, delivery.message_id)

    async def release(self, delivery: Delivery) -> None:
        # Redis cannot un-own a pending message; marking it idle for the whole timeout makes
        # the next XAUTOCLAIM (ours or another worker's) take it at once.
        await self.client.xclaim(
            self.stream,
            self.group,
            str(delivery.receipt),
            0,
            [delivery.message_id],
            idle=int(self.redelivery_timeout * 1000),
            justid=True,
        )
        self._next_claim = 0.0  # and this consumer's next receive looks for it

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await self._move_aside(
            delivery.message_id,
            seal_event(self.cipher, self.dead_stream, delivery.event),
            reason,
            delivery.attempt,
        )

    async def _move_aside(self, message_id: str, raw: bytes, reason: str, attempt: int) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.dead_stream,
                {"e": raw, "reason": reason, "id": message_id, "attempt": attempt},
                maxlen=100_000,
                approximate=True,
            )
            pipe.xack(self.stream, self.group, message_id)
            await pipe.execute()

    async def erase_customer(self, customer_id: str) -> int:
        """Reads both streams through, a page at a time, and deletes (and acknowledges) the
        entries whose event concerns the customer. Entries that do not open are left to the
        worker, which dead-letters them."""
        erased = 0
        for stream in (self.stream, self.dead_stream):
            start = "-"
            while True:
                page: Any = await self.client.xrange(stream, min=start, count=500)
                if not page:
                    break
                doomed = []
                for message_id, fields in page:
                    try:
                        event = open_event(self.cipher, stream, fields.get(b"e", b""))
                    except UNREADABLE:
                        continue
                    if event.customer_id == customer_id:
                        doomed.append(message_id)
                if doomed:
                    async with self.client.pipeline(transaction=True) as pipe:
                        if stream == self.stream:
                            pipe.xack(stream, self.group, *doomed)
                        pipe.xdel(stream, *doomed)
                        await pipe.execute()
                    erased += len(doomed)
                start = "(" + _text(page[-1][0])
        return erased

    async def oldest_age(self) -> float | None:
        """From stream ids (milliseconds of Redis's clock): the oldest pending message, or
        else the first one the group has not been handed yet."""
        await self._ensure_group()
        pending: Any = await self.client.xpending(self.stream, self.group)
        oldest: str | None = _text(pending["min"]) if pending.get("pending") else None
        if oldest is None:
            groups: Any = await self.client.xinfo_groups(self.stream)
            last = next(
                (_text(g["last-delivered-id"]) for g in groups if _text(g["name"]) == self.group),
                "0-0",
            )
            waiting: Any = await self.client.xrange(self.stream, min=f"({last}", count=1)
            oldest = _text(waiting[0][0]) if waiting else None
        if oldest is None:
            return 0.0
        [now_seconds, now_micros] = await self.client.time()
        published_ms = int(oldest.split("-", 1)[0])
        return max(0.0, now_seconds + now_micros / 1e6 - published_ms / 1000)

    async def aclose(self) -> None:
        return None
