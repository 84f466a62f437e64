"""Incoming rate limits per viewer, per service key and per client IP, shared through Redis.

Fixed windows: a counter per (kind, who, window number) that expires with its window. The
counters travel in the same round trip as the response-cache read (see
CacheBackend.count_and_get), so limiting costs the hot path no extra trip.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence

from gateway.settings import RateLimit

__all__ = ["IncomingLimits", "Window", "key_identity"]


class Window:
    """One counter of one request: its key, its limit and when its window ends."""

    __slots__ = ("ends_at", "key", "limit", "ttl")

    def __init__(self, key: str, limit: int, ttl: int, ends_at: float) -> None:
        self.key = key
        self.limit = limit
        self.ttl = ttl
        self.ends_at = ends_at


class IncomingLimits:
    def __init__(
        self,
        prefix: str,
        limits: dict[str, RateLimit | None],
        pseudonym: Callable[[str], str] | None = None,
    ) -> None:
        """`pseudonym` stands for each identity (a client IP, a customer) in its counter's
        key, so no key names a person; None: the identity itself (in-process counters)."""
        self.prefix = prefix
        self.limits = {kind: limit for kind, limit in limits.items() if limit is not None}
        self.pseudonym = pseudonym

    def windows(self, who: Sequence[tuple[str, str]]) -> list[Window]:
        """The counters for (kind, identity) pairs, e.g. ("viewer", "customer:1001")."""
        now = time.time()
        out = []
        for kind, identity in who:
            limit = self.limits.get(kind)
            if limit is None:
                continue
            number = math.floor(now / limit.per)
            if self.pseudonym is not None:
                identity = self.pseudonym(identity)
            ends_at = (number + 1) * limit.per
            out.append(
                Window(
                    f"{self.prefix}rl:{kind}:{identity}:{number}",
                    limit.calls,
                    max(1, math.ceil(ends_at - now)),
                    ends_at,
                )
            )
        return out

    @staticmethod
    def retry_after(windows: Sequence[Window], counts: Sequence[int]) -> float | None:
        """Seconds until the caller may retry, or None while every count is within its limit."""
        waits = [
            w.ends_at - time.time() for w, n in zip(windows, counts, strict=True) if n > w.limit
        ]
        return max(0.0, max(waits)) if waits else None


def key_identity(api_key: str) -> str:
    """A service key's counter name: a hash, so no key ever appears in Redis."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]
