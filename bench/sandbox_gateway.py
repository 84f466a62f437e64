"""`portal-gateway serve` with the sandbox providers, their calls counted on /metrics.

The sandbox providers live inside the gateway process and do not go through the upstream
client, so nothing outside the process sees their calls. This launcher adds one counter,
`bench_provider_calls_total{provider,operation}`, incremented where each sandbox provider
records a call, then runs the CLI's `serve` exactly as the console script does.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter

from gateway import cli
from gateway.sources import local_files, sandbox

__all__ = ["CALLS", "main"]

CALLS = Counter(
    "bench_provider_calls_total", "Sandbox provider calls (benchmark)", ["provider", "operation"]
)

_Call = Callable[[Any, str], Awaitable[None]]


def _counted(original: _Call, provider: str | None) -> _Call:
    async def call(self: Any, operation: str) -> None:
        CALLS.labels(provider or self.kind, operation).inc()
        await original(self, operation)

    return call


def main(argv: list[str]) -> int:
    sandbox._SandboxSource._call = _counted(sandbox._SandboxSource._call, None)  # type: ignore[method-assign]
    local_files.LocalFileStore._call = _counted(local_files.LocalFileStore._call, "files")  # type: ignore[method-assign]
    return cli.main(["serve", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
