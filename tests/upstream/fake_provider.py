"""A fake provider over real HTTP: scripted answers with fault injection, every call recorded."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["Call", "FakeProvider", "Scripted"]

# How long a "hung" provider keeps a request open if the client never gives up.
MAX_HANG = 30.0


@dataclass
class Scripted:
    """One scripted answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0
    hang: bool = False


@dataclass
class Call:
    """One request as the provider saw it; `at` is time.monotonic() on arrival."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float
    client_port: int | None


class FakeProvider:
    """Answers from a queue of scripted responses, then 200 {"ok": true} when it runs dry."""

    def __init__(self) -> None:
        self.url = ""
        self.calls: list[Call] = []
        self._script: deque[Scripted] = deque()
        # The server runs in its own thread; the test reads and scripts from the main one.
        self._lock = threading.Lock()
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    def push(
        self,
        status: int = 200,
        *,
        headers: dict[str, str] | None = None,
        body: Any = None,
        delay: float = 0.0,
        hang: bool = False,
        times: int = 1,
    ) -> None:
        """Queue `times` copies of one answer."""
        with self._lock:
            for _ in range(times):
                self._script.append(Scripted(status, dict(headers or {}), body, delay, hang))

    def count(self) -> int:
        with self._lock:
            return len(self.calls)

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.calls.append(
                Call(
                    method=request.method,
                    path=request.url.path,
                    query=request.url.query,
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                    at=time.monotonic(),
                    client_port=request.client.port if request.client else None,
                )
            )
            answer = self._script.popleft() if self._script else Scripted()
        if answer.hang:
            await _hang(request)
        elif answer.delay:
            await asyncio.sleep(answer.delay)
        content = answer.body if answer.body is not None else {"ok": True}
        return JSONResponse(content, status_code=answer.status, headers=answer.headers)


async def _hang(request: Request) -> None:
    # Hold the request open until the client gives up, like a provider that stopped
    # answering, then let the server move on (so shutting it down never waits on us).
    deadline = time.monotonic() + MAX_HANG
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.05)
