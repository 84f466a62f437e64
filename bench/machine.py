"""How fast this machine is at the moment, printed with each run.

The benchmark's VM drifts: on 2026-11-29 the same commit served warm portal-home (entity
cache only) at 440 req/s in the morning and at 154 req/s a day later. Two fixed yardsticks,
taken at the start and at the end of a run, tell a slower machine from a slower gateway
when runs of different days are compared: a pure-Python loop (CPU) and Redis PING round
trips (the loopback and the system calls every request pays several times).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from gateway.redis_client import blocking_client

__all__ = ["speed"]

_LOOP = 2_000_000


def _python_loop_ms() -> float:
    started = time.perf_counter()
    total = 0
    for i in range(_LOOP):
        total += i
    return (time.perf_counter() - started) * 1000


def speed(redis_url: str) -> dict[str, Any]:
    """{"python_loop_ms": median of 3 loops of 2M additions, "redis_ping_us": median of
    200 PING round trips on one connection (redis-py)}."""
    loops = [_python_loop_ms() for _ in range(3)]
    client = blocking_client(redis_url)
    try:
        client.ping()
        pings = []
        for _ in range(200):
            started = time.perf_counter()
            client.ping()
            pings.append((time.perf_counter() - started) * 1e6)
    finally:
        client.close()
    return {
        "python_loop_ms": round(statistics.median(loops), 1),
        "redis_ping_us": round(statistics.median(pings)),
    }
