"""What every stateful fake provider shares: recorded calls, injected faults, latency.

A fake is a Starlette app served for real (`with fake.running():` or
`tests.servers.serve(fake.app)`). Its routes keep state like the provider (records,
tickets, idempotency keys); this base records every exchange and can make any route answer
with a scripted fault instead:

    fake.fail("batch_read", 429, headers={"Retry-After": "2"})     # once
    fake.fail("batch_read", 500, times=None)                        # until clear_faults()
    fake.fail("tickets_create", 503, after_commit=True)             # the write happens, the
                                                                    # answer is lost
    fake.fail(None, malformed=True)                                 # any route, broken JSON
    fake.latency = 0.04                                             # every call takes 40 ms
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.servers import serve

__all__ = ["MALFORMED_JSON", "Answer", "Call", "Fault", "Handler", "StatefulFake"]

# A body that starts like JSON and stops halfway, as a proxy cutting a response would.
MALFORMED_JSON = b'{"results": [{"id": "1", "properties": {'


@dataclass
class Answer:
    """What a route handler answers: a JSON body (or raw bytes), a status, headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return b"" if self.body is None else orjson.dumps(self.body)


@dataclass
class Fault:
    """A scripted answer that replaces a route's own, `times` times (None: until cleared)."""

    route: str | None
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    malformed: bool = False
    delay: float = 0.0
    after_commit: bool = False
    times: int | None = 1


@dataclass
class Call:
    """One exchange as the fake saw it."""

    route: str
    method: str
    path: str
    query: str
    params: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any
    at: float  # time.monotonic() on arrival
    status: int = 0
    response_body: bytes = b""
    response_headers: dict[str, str] = field(default_factory=dict)
    faulted: bool = False
    took: float | None = None  # seconds from arrival to the answer, latency included

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


Handler = Callable[[Request, Any], Answer]


class StatefulFake:
    """Base of the fake providers: subclasses list their routes and provider-shaped errors."""

    provider = ""

    def __init__(self, *, latency: float = 0.0) -> None:
        self.url = ""
        self.latency = latency
        self.calls: list[Call] = []
        self._faults: list[Fault] = []
        # Handlers run on the server's thread, tests read and seed from theirs.
        self.lock = threading.RLock()
        routes = [
            Route(path, self._endpoint(name, handler), methods=[method])
            for name, method, path, handler in self.routes()
        ]
        routes.append(
            Route(
                "/{rest:path}",
                self._endpoint("unknown", self._unknown),
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            )
        )
        self.app = Starlette(routes=routes)

    # -- what subclasses provide ---------------------------------------------------------

    def routes(self) -> list[tuple[str, str, str, Handler]]:
        """(route name, method, path, handler) of each endpoint the fake serves."""
        raise NotImplementedError

    def authorized(self, request: Request) -> bool:
        raise NotImplementedError

    def error_body(self, status: int) -> Any:
        """The provider's JSON for an error status."""
        raise NotImplementedError

    def default_fault_headers(self, status: int) -> dict[str, str]:
        return {}

    # -- the test's controls -------------------------------------------------------------

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        """Serve the fake on a free port for the duration of the block."""
        with serve(self.app, timeout_graceful_shutdown=2) as server:
            self.url = server.url
            try:
                yield self
            finally:
                self.url = ""

    def fail(
        self,
        route: str | None = None,
        status: int = 500,
        *,
        times: int | None = 1,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        malformed: bool = False,
        delay: float = 0.0,
        after_commit: bool = False,
    ) -> None:
        """Make `route` (None: any route) answer `status` instead, the next `times` calls.

        `malformed` sends a truncated JSON body (status 200 unless given); `delay` holds the
        answer that many seconds; `after_commit` runs the route first (state changes, as if
        the provider did the work) and then answers with the fault, like a lost response.
        """
        if malformed and status == 500:
            status = 200
        with self.lock:
            self._faults.append(
                Fault(
                    route,
                    status,
                    body,
                    dict(headers if headers is not None else self.default_fault_headers(status)),
                    malformed,
                    delay,
                    after_commit,
                    times,
                )
            )

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    def count(self, route: str | None = None) -> int:
        """Calls received (to `route`, or to any)."""
        with self.lock:
            return sum(1 for call in self.calls if route is None or call.route == route)

    def calls_to(self, route: str) -> list[Call]:
        with self.lock:
            return [call for call in self.calls if call.route == route]

    def counts(self) -> dict[str, int]:
        """Calls received per route."""
        out: dict[str, int] = {}
        with self.lock:
            for call in self.calls:
                out[call.route] = out.get(call.route, 0) + 1
        return out

    def reset_calls(self) -> None:
        with self.lock:
            self.calls.clear()

    def reset(self) -> None:
        """Back to an empty provider: no data, calls, faults or latency (one server, many
        tests)."""
        with self.lock:
            self.calls.clear()
            self._faults.clear()
            self.latency = 0.0
            self.clear_data()

    def clear_data(self) -> None:
        """Forget the provider's records (subclasses)."""
        raise NotImplementedError

    # -- machinery -----------------------------------------------------------------------

    def _take_fault(self, route: str) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.route is None or fault.route == route:
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _fault_answer(self, fault: Fault) -> Answer:
        if fault.malformed:
            return Answer(fault.status, headers=dict(fault.headers), raw=MALFORMED_JSON)
        body = fault.body if fault.body is not None else self.error_body(fault.status)
        return Answer(fault.status, body, dict(fault.headers))

    def _unknown(self, _request: Request, _payload: Any) -> Answer:
        return Answer(404, self.error_body(404))

    def _endpoint(self, name: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            try:
                payload = orjson.loads(body) if body else None
            except orjson.JSONDecodeError:
                payload = _UNREADABLE
            call = Call(
                route=name,
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                params=list(request.query_params.multi_items()),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                json=None if payload is _UNREADABLE else payload,
                at=time.monotonic(),
            )
            with self.lock:
                self.calls.append(call)
            if self.latency:
                await asyncio.sleep(self.latency)
            fault = self._take_fault(name)
            if fault is not None and not fault.after_commit:
                answer = self._fault_answer(fault)
            elif not self.authorized(request):
                answer = Answer(401, self.error_body(401))
            elif payload is _UNREADABLE:
                answer = Answer(400, self.error_body(400))
            else:
                with self.lock:
                    answer = handler(request, payload)
                if fault is not None:
                    answer = self._fault_answer(fault)
            if fault is not None:
                call.faulted = True
                if fault.delay:
                    await asyncio.sleep(fault.delay)
            content = answer.encode()
            headers = dict(answer.headers)
            if content:
                headers.setdefault("content-type", "application/json; charset=utf-8")
            call.status = answer.status
            call.response_body = content
            call.response_headers = {k.lower(): v for k, v in headers.items()}
            call.took = time.monotonic() - call.at
            return Response(content, status_code=answer.status, headers=headers)

        return endpoint


_UNREADABLE = object()
