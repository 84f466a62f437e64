"""CPU per provider call: the gateway's `UpstreamClient` against a local HTTP server.

`python -m bench.provider_calls` (also a section of `make bench`) starts a server in a child
process (uvicorn, answering a 2 KB JSON contact the way HubSpot's fake does, after
`--latency` ms) and, in this process, makes calls through one `UpstreamClient` with its
default transport: the breaker, the in-process rate limiter, the deadline and the metrics
included, as every adapter's call pays them. Only this process's CPU is counted
(`time.process_time`), in blocks of calls, median and lowest of the blocks reported.

Three shapes, each at one call at a time and at 16 at once:
- `same-url`: one path again and again (what the URL memo remembers);
- `distinct-urls`: a new id in the path each call (nothing remembered);
- `params`: a new id and two query parameters each call (httpx encodes and re-parses).

`--instructions` counts instead of timing (not part of `make bench`: valgrind takes minutes):
callgrind's instruction count of the client process for 600 calls minus 100 calls, over
500, at 16 at once, for each shape and for `aiohttp-floor` (the same GET through a bare
aiohttp session, no httpx and no gateway code: what aiohttp's own request path costs).
Instructions do not move with the machine's load, which CPU times do by 20-40%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.ports import free_port

__all__ = ["measure"]

SHAPES = ("same-url", "distinct-urls", "params")
CONCURRENCY = (1, 16)
FLOOR = "aiohttp-floor"
_COLLECTED = re.compile(r"Collected : (\d+)")

_SERVER = """
import asyncio, json, sys
import uvicorn

BODY = json.dumps({
    "id": "1001",
    "properties": {f"p{i}": "x" * 40 for i in range(40)},
    "createdAt": "2026-01-01T00:00:00Z",
}).encode()
LATENCY = float(sys.argv[2]) / 1000


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if LATENCY:
        await asyncio.sleep(LATENCY)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, loop="uvloop", http="httptools")
"""


def measure(latency_ms: float = 0.0, calls: int = 400, blocks: int = 7) -> dict[str, Any]:
    """Starts the server, measures every shape and concurrency; answers the rows."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(port), str(latency_ms)])
    try:
        _wait_for(port)
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.provider_calls",
                "--client",
                f"http://127.0.0.1:{port}",
                "--calls",
                str(calls),
                "--blocks",
                str(blocks),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "LOG_LEVEL": "WARNING"},
        )
    finally:
        server.terminate()
        server.wait(10)
    rows: list[dict[str, Any]] = json.loads(completed.stdout)
    return {"latency_ms": latency_ms, "calls_per_block": calls, "blocks": blocks, "rows": rows}


def _wait_for(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the provider-call server did not start on port {port}")


def instructions(calls: tuple[int, int] = (100, 600)) -> dict[str, int]:
    """Instructions a call for each shape and the aiohttp floor (callgrind, see above)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not installed (apt-get install valgrind)")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(port), "0"])
    counts: dict[str, int] = {}
    try:
        _wait_for(port)
        for shape in (*SHAPES, FLOOR):
            totals = []
            for n in calls:
                command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"]
                command += [sys.executable, "-m", "bench.provider_calls", "--shape", shape]
                command += ["--client", f"http://127.0.0.1:{port}", "--calls", str(n)]
                ran = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "LOG_LEVEL": "WARNING"},
                )
                found = _COLLECTED.search(ran.stderr)
                if found is None:
                    raise RuntimeError(f"callgrind printed no count: {ran.stderr[-500:]}")
                totals.append(int(found.group(1)))
            counts[shape] = (totals[1] - totals[0]) // (calls[1] - calls[0])
    finally:
        server.terminate()
        server.wait(10)
    return counts


async def _once(url: str, shape: str, calls: int) -> None:
    """`calls` calls of one shape, 16 at once, after the same warm-up; nothing printed."""
    if shape == FLOOR:
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=20),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

        async def get() -> None:
            async with session.get(url + "/crm/v3/objects/contacts/1001") as answer:
                await answer.read()

        try:
            await _blocks(get, 16, calls, 1)
        finally:
            await session.close()
        return
    client, one = _upstream(url)
    try:
        await _blocks(one(shape), 16, calls, 1)
    finally:
        await client.aclose()


def _upstream(url: str) -> tuple[Any, Callable[[str], Callable[[], Awaitable[Any]]]]:
    """An UpstreamClient to `url` as the adapters have one, and each shape's call on it."""
    # imported here: the parent process only starts processes
    from gateway.settings import Settings
    from gateway.upstream import UpstreamClient

    settings = Settings(_env_file=None, rate_limit_hubspot="1000000/1s")
    client = UpstreamClient(
        "hubspot", base_url=url, settings=settings, headers={"Authorization": "Bearer bench"}
    )
    counter = iter(range(10**9))

    def one(shape: str) -> Callable[[], Awaitable[Any]]:
        if shape == "same-url":
            return lambda: client.request(
                "GET", "/crm/v3/objects/contacts/1001", operation="contacts.read"
            )
        if shape == "distinct-urls":
            return lambda: client.request(
                "GET", f"/crm/v3/objects/contacts/{next(counter)}", operation="contacts.read"
            )
        return lambda: client.request(
            "GET",
            f"/crm/v3/objects/contacts/{next(counter)}",
            operation="contacts.read",
            params={"properties": "email,firstname,lastname", "archived": "false"},
        )

    return client, one


async def _client(url: str, calls: int, blocks: int) -> list[dict[str, Any]]:
    client, one = _upstream(url)
    rows = []
    try:
        for shape in SHAPES:
            call = one(shape)
            for concurrency in CONCURRENCY:
                per_call = await _blocks(call, concurrency, calls, blocks)
                rows.append(
                    {
                        "shape": shape,
                        "concurrency": concurrency,
                        "cpu_us_median": round(statistics.median(per_call), 1),
                        "cpu_us_min": round(min(per_call), 1),
                    }
                )
    finally:
        await client.aclose()
    return rows


async def _blocks(
    call: Callable[[], Awaitable[Any]], concurrency: int, calls: int, blocks: int
) -> list[float]:
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            await call()

    await asyncio.gather(*(one() for _ in range(50)))  # connections open, code warm
    per_call = []
    for _ in range(blocks):
        started = time.process_time()
        await asyncio.gather(*(one() for _ in range(calls)))
        per_call.append((time.process_time() - started) / calls * 1e6)
    return per_call


def render(result: dict[str, Any]) -> list[str]:
    """The section's lines under the benchmark's table."""
    lines = [
        f"CPU per provider call (UpstreamClient, server at {result['latency_ms']} ms, "
        f"{result['blocks']} blocks of {result['calls_per_block']} calls; median / min us):"
    ]
    for row in result["rows"]:
        lines.append(
            f"  {row['shape']:<14} c={row['concurrency']:<3} "
            f"{row['cpu_us_median']:7.1f} / {row['cpu_us_min']:7.1f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.provider_calls", description=__doc__)
    parser.add_argument("--latency", type=float, default=0.0, help="ms the server waits")
    parser.add_argument("--calls", type=int, default=400, help="calls per block")
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions a call (valgrind)"
    )
    parser.add_argument("--client", help=argparse.SUPPRESS)  # the measuring child process
    parser.add_argument("--shape", help=argparse.SUPPRESS)  # one shape, under callgrind
    options = parser.parse_args(argv)
    if options.client:
        import uvloop

        if options.shape:
            uvloop.run(_once(options.client, options.shape, options.calls))
            return 0
        rows = uvloop.run(_client(options.client, options.calls, options.blocks))
        print(json.dumps(rows))
        return 0
    if options.instructions:
        for shape, count in instructions().items():
            print(f"{shape:<14} {count:>9,} instructions a call (c=16)")
        return 0
    result = measure(options.latency, options.calls, options.blocks)
    print("\n".join(render(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
