"""py-spy on the gateway process while a load runs, summarised by area and by function."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["AREAS", "ProfileError", "available", "record", "summarise"]

RATE = 200  # samples a second

# Areas a stack frame belongs to, by the file it runs in (first match wins).
AREAS: list[tuple[str, tuple[str, ...]]] = [
    ("response cache", ("gateway/cache/response.py",)),
    ("incoming rate limits", ("gateway/cache/incoming.py",)),
    ("cache backend (gateway/cache/redis.py)", ("gateway/cache/redis.py", "gateway/cache/memory")),
    ("entity cache + loaders", ("gateway/cache/", "gateway/loaders/", "aiodataloader")),
    ("auth (token check)", ("gateway/auth.py", "jwt/")),
    ("sources (adapters)", ("gateway/sources/", "gateway/upstream/")),
    ("Stripe SDK", ("stripe/",)),
    ("boto3/botocore (S3 calls, presigned URLs)", ("botocore/", "boto3/")),
    ("HTTP client (httpx, aiohttp)", ("httpx", "aiohttp")),
    ("resolvers", ("gateway/resolvers/",)),
    ("schema glue (gateway/schema)", ("gateway/schema/",)),
    ("graphql-core parse + validate", ("graphql/language/", "graphql/validation/")),
    ("graphql-core execution", ("graphql/execution/", "graphql/pyutils/", "graphql/type/")),
    ("strawberry", ("strawberry/",)),
    ("GraphQL endpoint (gateway/graphql_http.py)", ("gateway/graphql_http.py",)),
    ("persisted documents (gateway/persisted.py)", ("gateway/persisted.py",)),
    (
        "app, tracing, log redaction",
        ("gateway/app.py", "gateway/tracing.py", "gateway/redaction.py", "gateway/cors.py"),
    ),
    ("redis client", ("redis/",)),
    ("HTTP server (uvicorn)", ("uvicorn/", "httptools", "h11")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("logging", ("logging/", "gateway/observability.py")),
    ("asyncio", ("asyncio/",)),
]


# Areas nearly every stack passes through (the server and its event loop): their inclusive
# share says nothing.
_EVERYWHERE = {"asyncio", "HTTP server (uvicorn)"}


class ProfileError(Exception):
    pass


def available() -> bool:
    return _py_spy() is not None


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _area(frame: str) -> str | None:
    for area, needles in AREAS:
        if any(n in frame for n in needles):
            return area
    return None


def _self_area(frames: list[str]) -> str:
    """The area a sample's own time is charged to: the leaf's, but time in the standard
    library's event loop and streams (the socket writes of redis-py, for one) goes to the
    nearest caller that belongs to an area of its own."""
    for frame in reversed(frames):
        area = _area(frame)
        if area is not None and area != "asyncio":
            return area
        if area is None and not _stdlib(frame):
            where = frame[frame.rfind("(") + 1 : frame.rfind(")")] if "(" in frame else frame
            return f"other ({where.split('/')[0]})"
    return _area(frames[-1]) or "other (standard library)"


def _stdlib(frame: str) -> bool:
    where = frame[frame.rfind("(") + 1 : frame.rfind(")")] if "(" in frame else ""
    return "/" not in where or where.split("/")[0] in _STDLIB_PACKAGES


_STDLIB_PACKAGES = {"asyncio", "json", "concurrent", "email", "http", "logging", "urllib"}


def summarise(stacks: dict[str, int], seconds: float, title: str) -> dict[str, Any]:
    """Self and inclusive shares by area, and the functions with the most self time."""
    total = sum(stacks.values())
    if total == 0:
        raise ProfileError("py-spy took no samples")
    self_by_area: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_by_function: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        leaf = frames[-1]
        self_by_area[_self_area(frames)] += count
        self_by_function[leaf] += count
        for area in {a for a in map(_area, frames) if a is not None}:
            inclusive[area] += count

    def pct(n: int) -> str:
        return f"{100 * n / total:.0f}%"

    busy = total / (RATE * seconds)
    lines = [
        f"{total} samples over {seconds:.0f} s at {RATE} Hz: the gateway was on CPU"
        f" ~{100 * busy:.0f}% of the time (one core = 100%)",
        "self time by area (standard-library frames charged to their caller): "
        + ", ".join(f"{a} {pct(n)}" for a, n in self_by_area.most_common(9)),
        "inclusive (stacks through the area): "
        + ", ".join(
            f"{a} {pct(n)}"
            for a, n in inclusive.most_common()
            if a not in _EVERYWHERE and n * 50 >= total
        ),
        "top functions by self time:",
        *(f"  {pct(n):>4}  {f}" for f, n in self_by_function.most_common(12)),
    ]
    return {
        "title": title,
        "samples": total,
        "seconds": seconds,
        "busy_fraction": busy,
        "self_by_area": {a: n / total for a, n in self_by_area.most_common()},
        "inclusive_by_area": {a: n / total for a, n in inclusive.most_common()},
        "top_functions": [
            {"function": f, "self": n / total} for f, n in self_by_function.most_common(30)
        ],
        "summary": lines,
        "stacks": dict(sorted(stacks.items(), key=lambda kv: -kv[1])[:2000]),
    }


def record(pid: int, load: Callable[[], Any], title: str) -> dict[str, Any]:
    """Sample `pid` with py-spy while `load()` runs; answers summarise()'s result."""
    binary = _py_spy()
    if binary is None:
        raise ProfileError("py-spy is not installed (.venv/bin/pip install py-spy)")
    with tempfile.TemporaryDirectory(prefix="pg-bench-spy-") as tmp:
        output = Path(tmp) / "stacks.txt"
        spy = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(RATE),
                "--format",
                "raw",
                "--nolineno",
                "--nonblocking",
                "--output",
                str(output),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        time.sleep(1.0)  # py-spy attaches
        if spy.poll() is not None:
            raise ProfileError((spy.stdout.read() if spy.stdout else b"").decode()[-500:])
        started = time.monotonic()
        load()
        seconds = time.monotonic() - started
        spy.send_signal(2)  # SIGINT: py-spy writes what it has and exits
        try:
            out, _ = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            raise ProfileError("py-spy did not stop") from None
        if not output.exists():
            raise ProfileError(out.decode(errors="replace")[-500:])
        stacks: dict[str, int] = {}
        for line in output.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[stack] = stacks.get(stack, 0) + int(count)
    # the second before and after the load the gateway idles: py-spy skips idle samples
    return summarise(stacks, seconds, title)
