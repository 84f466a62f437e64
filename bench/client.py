"""The Python load generator: fixed concurrency over aiohttp, in a process of its own.

Used where wrk cannot do the job (cold rows flush the cache before each request; the
webhook burst sends an exact number of distinct signed events) and as the fallback when
wrk is not installed. Run as `python -m bench.client` with a JSON spec on stdin; prints
one JSON result on stdout.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter
from typing import Any

import aiohttp

from bench.redis_db import delete_prefix
from gateway.redis_client import blocking_client

__all__ = ["percentile", "run"]

# A cold row empties the cache again and again, this many seconds apart, until a pass finds
# nothing: the gateway writes a request's cache fills just after its answer, and on a slow
# day a staff page's fills (100 entries and their tags) landed more than 50 ms after it,
# so a single blind second pass let the next "cold" request find part of the page cached.
_FILLS_LAND = 0.05
_FLUSHES_AT_MOST = 40


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of `values` (any order); None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


class _Bodies:
    """The requests to send: a fixed list cycled through, or random customer subsets."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.requests: list[tuple[bytes, dict[str, str]]] = [
            (r["body"].encode(), r["headers"]) for r in spec.get("requests", [])
        ]
        self.subset = spec.get("subset")
        self._next = 0

    def __next__(self) -> tuple[bytes, dict[str, str]]:
        if self.subset is not None:
            ids = random.sample(self.subset["pool"], self.subset["size"])
            body = json.dumps({"query": self.subset["template"], "variables": {"ids": ids}})
            return body.encode(), self.subset["headers"]
        request = self.requests[self._next % len(self.requests)]
        self._next += 1
        return request


def _ms(seconds: float | None) -> float | None:
    return seconds * 1000 if seconds is not None else None


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Send the spec's requests; answers counts, latency percentiles (ms) and errors."""
    url: str = spec["url"]
    concurrency: int = spec["concurrency"]
    duration: float | None = spec.get("duration")
    count: int | None = spec.get("count")
    check_graphql: bool = spec.get("check_graphql", True)
    flush = spec.get("flush")
    flusher = blocking_client(flush["redis_url"]) if flush else None
    bodies = _Bodies(spec)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    remaining = [count if count is not None else -1]

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + duration if duration else float("inf")

        async def worker() -> None:
            while time.perf_counter() < deadline:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
                body, headers = next(bodies)
                if flusher is not None:
                    # cold: the cache is emptied before each request, outside the timing;
                    # the gateway finishes a request's cache fills just after its answer,
                    # so they are let land and emptied again
                    delete_prefix(flusher, flush["prefix"])
                    for _ in range(_FLUSHES_AT_MOST):
                        await asyncio.sleep(_FILLS_LAND)
                        if delete_prefix(flusher, flush["prefix"]) == 0:
                            break
                sent = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        answer = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as error:
                    errors.append(f"{type(error).__name__}: {error}")
                    continue
                latencies.append(time.perf_counter() - sent)
                statuses[status] += 1
                if status >= 400 or (check_graphql and b'"errors"' in answer):
                    errors.append(f"HTTP {status}: {answer[:300].decode(errors='replace')}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if flusher is not None:
        flusher.close()
    busy = sum(latencies)
    return {
        "requests": len(latencies),
        "elapsed": elapsed,
        # with a flush between requests the wall time includes the flushes: count only
        # the time requests were in flight (concurrency 1)
        "rps": len(latencies) / busy if flusher is not None and busy else len(latencies) / elapsed,
        "p50_ms": _ms(percentile(latencies, 0.50)),
        "p99_ms": _ms(percentile(latencies, 0.99)),
        "mean_ms": _ms(busy / len(latencies) if latencies else None),
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def main() -> int:
    spec = json.load(sys.stdin)
    try:
        import uvloop
    except ImportError:  # uvloop comes with uvicorn[standard]; plain asyncio works too
        result = asyncio.run(run(spec))
    else:
        result = uvloop.run(run(spec))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
