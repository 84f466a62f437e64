"""How the gateway is served: uvicorn's options from Settings, and the HTTP protocol that
bounds how long and how large a request's headers may be."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.body_deadline import BODY_IN
from gateway.settings import Settings

__all__ = ["HeaderLimits", "HeaderLimitsProtocol", "uvicorn_options"]


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of uvicorn.run / uvicorn.Config that the gateway is served with,
    by `portal-gateway serve` and by the tests' servers alike."""
    proxies = settings.forwarded_allow_ips
    limits = HeaderLimits(settings.http_header_timeout, settings.http_max_header_bytes)
    return {
        "host": settings.host,
        "port": settings.port,
        # uvicorn has no option for a header deadline; Config(http=...) takes what builds
        # one connection's protocol (see HeaderLimitsProtocol)
        "http": functools.partial(HeaderLimitsProtocol, limits=limits),
        # X-Forwarded-For and -Proto are believed only from these peers; with none, the
        # header is not read at all and the socket peer is the client (per-IP rate limit)
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": ",".join(proxies) if proxies else None,
        # an idle connection between two requests is closed after this many seconds
        "timeout_keep_alive": settings.http_keepalive_timeout,
        # a WebSocket frame or message larger than the largest GraphQL request is refused by
        # the server itself (close 1009) before it is buffered whole
        "ws_max_size": settings.request_max_bytes,
        # SIGTERM: stop accepting, let in-flight requests finish, then close clients and pools
        "timeout_graceful_shutdown": settings.shutdown_grace,
        "lifespan": "on",
        "log_config": None,  # uvicorn's lines go through the gateway's JSON handler
        "access_log": False,  # the gateway logs /graphql itself (gateway.access); see docs
    }


@dataclass(frozen=True)
class HeaderLimits:
    """A request's line and headers: complete within `timeout` seconds and `max_bytes`."""

    timeout: float
    max_bytes: int


class HeaderLimitsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (what uvicorn picks by default) plus two bounds on reading
    a request's line and headers, which uvicorn does not have: they must be complete within
    `limits.timeout` seconds of the connection opening or of the first byte after the
    previous response, and within `limits.max_bytes` bytes (httptools itself takes
    megabytes). Past the deadline the connection is closed; past the size uvicorn's own 400
    answer is sent and the connection closed.

    Why a subclass: `uvicorn.Config(http=...)` is uvicorn's documented seam for the HTTP
    protocol, and the deadline has to be kept where the bytes arrive, before any ASGI app
    sees the request. It overrides only public methods (the asyncio.Protocol callbacks and
    httptools' parser callbacks), reads public attributes (`loop`, `transport`, `cycle`)
    and writes no bytes of its own: the refusal is uvicorn's `send_400_response` (a 400,
    where 431 would be exact, rather than a status line framed here).

    uvicorn builds each connection's protocol by calling what `http` holds with keywords
    (and looks up an optional `alpn_protocols` on it), so the limits travel as
    `functools.partial(HeaderLimitsProtocol, limits=...)`: a partial of a module-level class
    pickles, which `--workers` and `--reload` need (uvicorn sends the Config to each process
    it spawns), where a class made per setting would not.
    """

    def __init__(self, *args: Any, limits: HeaderLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.header_timer: asyncio.TimerHandle | None = None
        self.header_bytes = 0  # of the next request's headers, but for their first read
        self.in_body = False  # between a request's headers and the end of its body

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Counted toward max_bytes: the reads that begin and end while the next request's
        # headers are awaited, which is all of them but the first (it may hold the end of a
        # previous body); the bound is thus max_bytes plus one read.
        counted = self.header_timer is not None and not self.in_body
        super().data_received(data)
        cycle: Any = self.cycle  # None until the first request's headers are complete
        if cycle is not None and not cycle.response_complete:
            # a request is being answered (nearly always: its headers came whole in this
            # read, and no timer was armed); a pipelined one's are timed once it is
            return
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # closed, or upgraded to a WebSocket, whose protocol times itself
        if self.header_timer is None:
            # Armed at the read that leaves headers incomplete: the deadline runs from the
            # request's first byte. Also for what is left of a body answered before it was
            # read (a 413), which goes on arriving with no request being answered (uvicorn's
            # keep-alive timer stops at each read): the next headers are due within it.
            self.arm_header_deadline()
        elif counted and not self.in_body:
            self.header_bytes += len(data)
            if self.header_bytes > self.limits.max_bytes:
                self.disarm_header_deadline()
                self.send_400_response("Request header fields too large.")

    def on_headers_complete(self) -> None:
        self.in_body = True
        if self.header_timer is not None:
            self.disarm_header_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.in_body = False
        # tells the app the body is all in: nothing left for its body deadline to time
        self.scope.setdefault("extensions", {})[BODY_IN] = {}

    def arm_header_deadline(self) -> None:
        self.disarm_header_deadline()
        self.header_bytes = 0
        self.header_timer = self.loop.call_later(self.limits.timeout, self.header_deadline_passed)

    def disarm_header_deadline(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def header_deadline_passed(self) -> None:
        self.header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
