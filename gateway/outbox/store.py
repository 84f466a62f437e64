"""Where the outbox keeps each write's state: what the customer sees of a waiting write,
the dead letters an operator handles, per-customer order and leases.

The write itself travels on the event bus (`WriteQueued`); this store is the shared view of
it. Redis (`RedisOutboxStore`) with REDIS_URL; in-process (`MemoryOutboxStore`) in
development, where the app is its own worker. Unlike the cache backend, these methods raise
when Redis is away: a write is never answered QUEUED unless its state was stored.

Redis keys (`{CACHE_PREFIX}` first): `outbox:writes:{customer}` a hash write id -> sealed record;
`outbox:seq:{customer}` the customer's write counter; `outbox:lease:{customer}` the worker
delivering that customer's writes; `outbox:dead` a sorted set of `{customer}/{write id}` by
acceptance time. On a Redis Cluster the customer's part is a hash tag (`outbox:writes:{42}`
with the braces, hashed on `42`), so a customer's three keys share a slot.

The dead-letter index is written apart from the record (on a cluster it lives in another
slot): added before a failed record is stored, removed after a record that is no longer
failed is stored, and read through the records' own state. A crash between the two steps
leaves at most an index entry that `dead` skips, never a failed write missing from it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from gateway.domain import DeliveryState, QueuedWrite
from gateway.encryption import DataCipher
from gateway.redis_client import RedisClient, slot_group

__all__ = ["MemoryOutboxStore", "OutboxStore", "RedisOutboxStore"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(QueuedWrite)

# deletes the lease only while it is still ours
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class OutboxStore(Protocol):
    async def next_seq(self, customer_id: str) -> int:
        """The customer's next write number (1, 2, ...)."""
        ...

    async def put(self, write: QueuedWrite) -> None:
        """Store the write's record (replacing an older one of the same id); a FAILED one is
        listed in `dead` as well, any other taken off that list."""
        ...

    async def writes(self, customer_id: str) -> list[QueuedWrite]:
        """The customer's records, in write order."""
        ...

    async def get(self, customer_id: str, write_id: str) -> QueuedWrite | None: ...

    async def dead(self, limit: int = 1000) -> list[QueuedWrite]:
        """Dead letters of every customer, oldest first."""
        ...

    async def dead_count(self) -> int: ...

    async def drop(self, customer_id: str, write_id: str) -> bool:
        """Forget the write (its record and dead letter); answers whether it was there."""
        ...

    async def prune(self, customer_id: str, older_than: float) -> int:
        """Forget DELIVERED records delivered more than `older_than` seconds ago."""
        ...

    async def lease(self, customer_id: str, owner: str, ttl: float) -> bool:
        """Take (or renew) the right to deliver the customer's writes for `ttl` seconds."""
        ...

    async def unlease(self, customer_id: str, owner: str) -> None: ...

    async def erase(self, customer_id: str) -> int:
        """Forget everything of the customer; answers how many writes."""
        ...


def _delivered_before(write: QueuedWrite, cutoff: datetime) -> bool:
    return (
        write.state is DeliveryState.DELIVERED
        and write.delivered_at is not None
        and write.delivered_at < cutoff
    )


class RedisOutboxStore:
    """The outbox state in Redis, each record sealed (DATA_ENCRYPTION_KEYS) with its key."""

    def __init__(self, client: RedisClient, prefix: str, cipher: DataCipher) -> None:
        self.client = client
        self.prefix = f"{prefix}outbox:"
        self.cipher = cipher
        self._dead = f"{self.prefix}dead"
        self._release: Any = client.register_script(_RELEASE)

    def _key(self, kind: str, customer_id: str) -> str:
        return f"{self.prefix}{kind}:{slot_group(customer_id, self.client)}"

    def _hash(self, customer_id: str) -> str:
        return self._key("writes", customer_id)

    def _open(self, customer_id: str, raw: bytes) -> QueuedWrite:
        return _decoder.decode(self.cipher.open(raw, self._hash(customer_id).encode()))

    async def next_seq(self, customer_id: str) -> int:
        return int(await self.client.incr(self._key("seq", customer_id)))

    async def put(self, write: QueuedWrite) -> None:
        key = self._hash(write.customer_id)
        sealed = self.cipher.seal(_encoder.encode(write), key.encode())
        member = f"{write.customer_id}/{write.id}"
        if write.state is DeliveryState.FAILED:
            await self.client.zadd(self._dead, {member: write.accepted_at.timestamp()})
            await self.client.hset(key, write.id, sealed)
        else:
            await self.client.hset(key, write.id, sealed)
            await self.client.zrem(self._dead, member)

    async def writes(self, customer_id: str) -> list[QueuedWrite]:
        raw: Any = await self.client.hgetall(self._hash(customer_id))
        found = [self._open(customer_id, value) for value in raw.values()]
        return sorted(found, key=lambda write: write.seq)

    async def get(self, customer_id: str, write_id: str) -> QueuedWrite | None:
        raw: Any = await self.client.hget(self._hash(customer_id), write_id)
        return None if raw is None else self._open(customer_id, raw)

    async def dead(self, limit: int = 1000) -> list[QueuedWrite]:
        members: Any = await self.client.zrange(self._dead, 0, limit - 1)
        found = []
        for member in members:
            customer_id, _, write_id = member.decode().rpartition("/")
            write = await self.get(customer_id, write_id)
            if write is not None and write.state is DeliveryState.FAILED:
                found.append(write)
        return found

    async def dead_count(self) -> int:
        return int(await self.client.zcard(self._dead))

    async def drop(self, customer_id: str, write_id: str) -> bool:
        removed = await self.client.hdel(self._hash(customer_id), write_id)
        await self.client.zrem(self._dead, f"{customer_id}/{write_id}")
        return bool(removed)

    async def prune(self, customer_id: str, older_than: float) -> int:
        cutoff = datetime.fromtimestamp(time.time() - older_than, UTC)
        gone = [w.id for w in await self.writes(customer_id) if _delivered_before(w, cutoff)]
        if gone:
            await self.client.hdel(self._hash(customer_id), *gone)
        return len(gone)

    async def lease(self, customer_id: str, owner: str, ttl: float) -> bool:
        key = self._key("lease", customer_id)
        milliseconds = max(1, int(ttl * 1000))
        if await self.client.set(key, owner, px=milliseconds, nx=True):
            return True
        current: Any = await self.client.get(key)
        if current is not None and current.decode() == owner:
            await self.client.pexpire(key, milliseconds)
            return True
        return False

    async def unlease(self, customer_id: str, owner: str) -> None:
        await self._release(keys=[self._key("lease", customer_id)], args=[owner])

    async def erase(self, customer_id: str) -> int:
        writes: Any = await self.client.hkeys(self._hash(customer_id))
        # the customer's keys share a slot: one command
        await self.client.delete(
            self._hash(customer_id), self._key("seq", customer_id), self._key("lease", customer_id)
        )
        if writes:
            await self.client.zrem(self._dead, *(f"{customer_id}/{w.decode()}" for w in writes))
        return len(writes)


class MemoryOutboxStore:
    """The outbox state of one process (development: the memory bus, the app's own worker)."""

    def __init__(self) -> None:
        self._writes: dict[str, dict[str, QueuedWrite]] = {}
        self._seq: dict[str, int] = {}
        self._leases: dict[str, tuple[str, float]] = {}

    async def next_seq(self, customer_id: str) -> int:
        self._seq[customer_id] = self._seq.get(customer_id, 0) + 1
        return self._seq[customer_id]

    async def put(self, write: QueuedWrite) -> None:
        self._writes.setdefault(write.customer_id, {})[write.id] = write

    async def writes(self, customer_id: str) -> list[QueuedWrite]:
        return sorted(self._writes.get(customer_id, {}).values(), key=lambda w: w.seq)

    async def get(self, customer_id: str, write_id: str) -> QueuedWrite | None:
        return self._writes.get(customer_id, {}).get(write_id)

    async def dead(self, limit: int = 1000) -> list[QueuedWrite]:
        found = [
            write
            for writes in self._writes.values()
            for write in writes.values()
            if write.state is DeliveryState.FAILED
        ]
        return sorted(found, key=lambda w: w.accepted_at)[:limit]

    async def dead_count(self) -> int:
        return len(await self.dead(limit=1_000_000))

    async def drop(self, customer_id: str, write_id: str) -> bool:
        return self._writes.get(customer_id, {}).pop(write_id, None) is not None

    async def prune(self, customer_id: str, older_than: float) -> int:
        cutoff = datetime.fromtimestamp(time.time() - older_than, UTC)
        writes = self._writes.get(customer_id, {})
        gone: Sequence[str] = [id for id, w in writes.items() if _delivered_before(w, cutoff)]
        for write_id in gone:
            del writes[write_id]
        return len(gone)

    async def lease(self, customer_id: str, owner: str, ttl: float) -> bool:
        now = time.monotonic()
        holder = self._leases.get(customer_id)
        if holder is not None and holder[0] != owner and holder[1] > now:
            return False
        self._leases[customer_id] = (owner, now + ttl)
        return True

    async def unlease(self, customer_id: str, owner: str) -> None:
        holder = self._leases.get(customer_id)
        if holder is not None and holder[0] == owner:
            del self._leases[customer_id]

    async def erase(self, customer_id: str) -> int:
        self._seq.pop(customer_id, None)
        self._leases.pop(customer_id, None)
        return len(self._writes.pop(customer_id, {}))
