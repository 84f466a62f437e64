"""HTTP/1.1 under httpx for the provider calls: a keep-alive pool per origin on asyncio,
answers parsed by httptools (llhttp) (DESIGN sections 8, 12).

Adapters keep httpx's API (requests, responses, auth, exceptions); only the transport
underneath is this one. One provider call at a time (a fake answering in 40 ms), the client
process spent 1.85 ms of CPU per call through httpx on httpx-aiohttp and 1.2 ms through
httpx on this transport: aiohttp's client machinery (session, connector, tracing hooks,
its own request and response objects) is what it leaves out.

What a provider API needs stays: TLS with httpx's CA bundle (certifi, or SSL_CERT_FILE /
SSL_CERT_DIR), keep-alive with an idle expiry, a cap on connections per origin with
first-come waiting, chunked and close-delimited bodies, httpx's timeouts and exceptions.
A proxy from the environment is httpx's business: it mounts a proxy transport of its own
(`gateway.upstream.client._ProviderClient` makes that httpx-aiohttp's).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections import deque
from typing import cast

import httptools
import httpx

__all__ = ["Http11Transport"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Methods whose repetition is harmless (RFC 9110 9.2.2): sent again, once, on a fresh
# connection when a kept-alive one turns out closed by the server before it answered.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class _Closed(Exception):
    """The server closed a kept-alive connection before any byte of the answer."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one exchange at a time, the answer read whole."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[httpx.Response] | None = None
        self._head_only = False
        self._got_bytes = False
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._delimited = False  # Content-Length or chunked: not ended by the close
        self._headers_done = False
        self._complete = False  # the answer is in: any further message is unasked for

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but have its methods
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self._answer
        if answer is None or answer.done():
            return
        if self._headers_done and not self._delimited:
            self._finish(keep=False)  # the close is the end of the body (RFC 9112 6.3)
        elif not self._got_bytes:
            answer.set_exception(_Closed())
        else:
            answer.set_exception(
                httpx.RemoteProtocolError("the server closed the connection mid-answer")
            )

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            self._fail(httpx.RemoteProtocolError("an answer nobody asked for"))
            self.close()
            return
        self._headers = []
        self._body = []
        self._reason = b""
        self._headers_done = False
        self._delimited = False

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            self._delimited = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._head_only and self._parser.get_status_code() >= 200:
            # an answer to HEAD has no body whatever its headers say; llhttp cannot be told,
            # so the connection is not reused
            self._finish(keep=False)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            return  # 1xx: informational, the real answer follows on the same connection
        self._complete = True
        self._finish(keep=self._parser.should_keep_alive())

    # -- the exchange --------------------------------------------------------------------

    def _finish(self, keep: bool) -> None:
        answer = self._answer
        if answer is None or answer.done():
            return
        if not keep:
            self.close()
        answer.set_result(
            httpx.Response(
                self._parser.get_status_code(),
                headers=self._headers,
                stream=httpx.ByteStream(b"".join(self._body)),
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": self._reason},
            )
        )

    def _fail(self, error: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    async def exchange(self, request: bytes, head_only: bool) -> httpx.Response:
        """Writes one request and answers its response, body read."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise _Closed()
        self._answer = asyncio.get_running_loop().create_future()
        self._head_only = head_only
        self._got_bytes = False
        self._headers_done = False
        self._complete = False
        try:
            transport.write(request)
            return await self._answer
        finally:
            self._answer = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Origin:
    """The connections to one scheme://host:port."""

    def __init__(self, limit: int) -> None:
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(limit)  # first come, first served


class Http11Transport(httpx.AsyncBaseTransport):
    """httpx transport: HTTP/1.1 with keep-alive; at most `max_connections` per origin."""

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._max = max_connections
        self._expiry = keepalive_expiry
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        port = url.port or _DEFAULT_PORTS[scheme]
        key = (scheme, url.host, port)
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(self._max)
        timeouts = request.extensions.get("timeout", {})
        wire = _serialize(request, await request.aread())
        head_only = request.method == "HEAD"
        if origin.slots.locked():
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await origin.slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no connection to the provider came free in time") from None
        else:
            await origin.slots.acquire()  # free at once: no timer to set and cancel
        try:
            connect = timeouts.get("connect")
            exchange = functools.partial(
                self._exchange, origin, key, wire, request.method, connect, head_only
            )
            read = timeouts.get("read")
            try:
                if read is None:  # bounded by the caller (the upstream client's deadline)
                    connection, response = await exchange()
                else:
                    async with asyncio.timeout(read):
                        connection, response = await exchange()
            except TimeoutError:
                raise httpx.ReadTimeout("the provider did not answer in time") from None
            except _Closed:
                raise httpx.RemoteProtocolError(
                    "the server closed the connection without answering"
                ) from None
            if not connection.closed:
                connection.idle_since = asyncio.get_running_loop().time()
                origin.idle.append(connection)
        finally:
            origin.slots.release()
        # The body is all here: decoding it now, in one synchronous pass, spares httpx's
        # send the async iteration of its aread (a gain within this machine's noise on a
        # one-call-at-a-time loop). A body that does not decode raises
        # httpx.DecodingError here, as it would have there.
        response.read()
        return response

    async def _exchange(
        self,
        origin: _Origin,
        key: tuple[str, str, int],
        wire: bytes,
        method: str,
        connect_within: float | None,
        head_only: bool,
    ) -> tuple[_Connection, httpx.Response]:
        """One request on a kept-alive or new connection; answers the connection and the
        response. A failed or cancelled exchange closes its connection (never reused)."""
        connection, reused = await self._connection(origin, key, connect_within)
        try:
            try:
                return connection, await connection.exchange(wire, head_only)
            except _Closed:
                connection.close()
                if not (reused and method in _IDEMPOTENT):
                    raise
            # a kept-alive connection the server had closed: once more, afresh
            connection, _reused = await self._connection(origin, key, connect_within, fresh=True)
            return connection, await connection.exchange(wire, head_only)
        except BaseException:
            connection.close()
            raise

    async def _connection(
        self,
        origin: _Origin,
        key: tuple[str, str, int],
        connect_within: float | None,
        fresh: bool = False,
    ) -> tuple[_Connection, bool]:
        """A kept-alive connection of the origin (the most recently used: warmest) or a new
        one; answers it and whether it was reused. The caller holds one of its slots."""
        if not fresh:
            now = asyncio.get_running_loop().time()
            idle = origin.idle
            while idle:
                connection = idle.pop()
                if connection.closed or now - connection.idle_since > self._expiry:
                    connection.close()
                    continue
                return connection, True
        scheme, host, port = key
        context = self._ssl_context() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_within):
                _transport, connection = await loop.create_connection(
                    _Connection, host, port, ssl=context, server_hostname=host if context else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:  # ssl.SSLError included
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return connection, False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            verify = self._verify
            self._ssl = (
                verify
                if isinstance(verify, ssl.SSLContext)
                else httpx.create_ssl_context(verify=verify)
            )
        return self._ssl

    async def aclose(self) -> None:
        """Closes the kept-alive connections; those in use close when their answer is in."""
        self._closed = True
        for origin in self._origins.values():
            while origin.idle:
                origin.idle.pop().close()


def _serialize(request: httpx.Request, body: bytes) -> bytes:
    """The request line, headers and body as they go on the wire."""
    target = request.url.raw_path  # path and query, percent-encoded by httpx
    lines = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    chunked = False
    for name, value in request.headers.raw:
        if name.lower() == b"transfer-encoding":
            chunked = True  # a streamed body, read whole above: sent with its length
            continue
        lines += [name, b": ", value, b"\r\n"]
    if chunked:
        lines += [b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n"]
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)
