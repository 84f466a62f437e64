"""Run an action once per key across retries and replicas; later calls get the first answer."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence

from gateway.cache.base import CacheBackend

__all__ = ["IdempotencyStore"]

_PENDING = b"\x00pending"


class IdempotencyStore:
    def __init__(self, backend: CacheBackend, prefix: str, ttl: int = 86_400) -> None:
        self.backend = backend
        self.prefix = prefix
        self.ttl = ttl
        self._local: dict[str, asyncio.Lock] = {}

    async def run_once(
        self,
        key: str,
        action: Callable[[], Awaitable[bytes]],
        wait: float = 10.0,
        tags: Sequence[str] = (),
    ) -> bytes:
        """The stored answer for `key`, or the answer of `action` run now and stored (with
        `tags`: what erasing a customer drops). The key is stored as a digest: what the
        caller chose for it (a clientMutationId) never appears in Redis."""
        digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        full = f"{self.prefix}idem:{digest}"
        lock = self._local.setdefault(full, asyncio.Lock())
        try:
            async with lock:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + wait
                while True:
                    [stored] = await self.backend.get_many([full])
                    if stored is not None and stored != _PENDING:
                        return stored
                    if stored is None and await self.backend.add(full, _PENDING, 60):
                        break
                    if stored is None and self.backend.status != "ok":
                        break  # no shared memory to coordinate with: the provider's key decides
                    if loop.time() > deadline:
                        raise TimeoutError("an identical request is still in progress")
                    await asyncio.sleep(0.05)
                try:
                    answer = await action()
                except BaseException:
                    await self.backend.delete([full])
                    raise
                await self.backend.set_many(
                    [(full, answer, self.ttl)], {f"{self.prefix}tag:{tag}": [full] for tag in tags}
                )
                return answer
        finally:
            if not lock.locked() and self._local.get(full) is lock:
                del self._local[full]
