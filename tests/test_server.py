"""How the gateway is served (gateway/server.py, and the app's body deadline): what a client
can hold open, and whom X-Forwarded-For is believed from. Every test talks to a gateway
served with `uvicorn_options(settings)`, the options of `portal-gateway serve`, over raw
sockets; h11 frames the bytes sent and parses the answers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import h11
import httpx
import pytest

from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway
from tests.events.clients import INVOICE_UPDATED, GraphQLSocket
from tests.webhooks.signing import WEBHOOK_SECRETS

QUERY = b'{"query": "{ __typename }"}'


class RawClient:
    """One TCP connection to the gateway; what it sends is framed by h11."""

    def __init__(self, server: GatewayServer) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.settings.port), timeout=5)
        self.http = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.sock.close()

    def request_bytes(
        self, method: str, path: str, headers: list[tuple[str, str]] | None = None
    ) -> bytes:
        """A request's line and headers (a GET's end too: it has no body)."""
        all_headers = [("host", "127.0.0.1"), *(headers or [])]
        data = self.http.send(h11.Request(method=method, target=path, headers=all_headers))
        if method == "GET":
            self.http.send(h11.EndOfMessage())
        return data or b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def body_part(self, data: bytes) -> None:
        self.sock.sendall(self.http.send(h11.Data(data=data)) or b"")

    def end(self) -> None:
        self.sock.sendall(self.http.send(h11.EndOfMessage()) or b"")

    def answered(self) -> bool:
        """Whether the server has sent something (or closed) already."""
        return bool(select.select([self.sock], [], [], 0)[0])

    def response(self, within: float) -> tuple[int, dict[str, str], bytes]:
        """The next response (status, headers, body), which must arrive within `within` s."""
        deadline = time.monotonic() + within
        status, headers, body = 0, {}, b""
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                remaining = deadline - time.monotonic()
                assert remaining > 0, "no complete response in time"
                self.sock.settimeout(remaining)
                self.http.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, body
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError("closed without a complete response")

    def closed_within(self, seconds: float) -> bool:
        """Whether the server closes the connection within `seconds` (what it sends is read
        and dropped)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                if self.sock.recv(65536) == b"":
                    return True
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
        return False


@contextlib.contextmanager
def raw(server: GatewayServer) -> Iterator[RawClient]:
    client = RawClient(server)
    try:
        yield client
    finally:
        client.close()


# -- headers --------------------------------------------------------------------------------


def test_headers_sent_a_byte_at_a_time_are_cut_off_at_the_header_deadline(
    start: Callable[..., GatewayServer],
) -> None:
    server = start(http_header_timeout=0.5)
    with raw(server) as client:
        trickle = client.request_bytes("GET", "/healthz", [("x-slow", "a" * 100)])
        started = time.monotonic()
        cut_off = None
        for byte in trickle[:-2]:  # never the final CRLF: the headers never complete
            try:
                client.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut_off = time.monotonic() - started
                break
            if client.closed_within(0.05):
                cut_off = time.monotonic() - started
                break
        assert cut_off is not None, "the server kept reading the headers"
        assert cut_off < 1.5  # the deadline is 0.5 s from the connection's start


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(
    start: Callable[..., GatewayServer],
) -> None:
    server = start(http_header_timeout=0.5)
    with raw(server) as client:
        assert client.closed_within(1.5)


def test_the_next_request_on_a_connection_has_its_own_header_deadline(
    start: Callable[..., GatewayServer],
) -> None:
    """Kept alive, a connection's second request gets the full deadline from its first byte,
    and its headers too are cut off when they stall."""
    server = start(http_header_timeout=0.5, http_keepalive_timeout=5)
    with raw(server) as client:
        client.send(client.request_bytes("GET", "/healthz"))
        assert client.response(within=2)[0] == 200
        client.http.start_next_cycle()
        time.sleep(0.7)  # idle past the header deadline: keep-alive governs this wait
        client.send(client.request_bytes("GET", "/healthz")[:10])
        started = time.monotonic()
        assert client.closed_within(1.5)
        assert time.monotonic() - started > 0.3  # counted from the request's first byte


async def test_a_websocket_outlives_the_header_deadline(
    start: Callable[..., GatewayServer],
) -> None:
    """Once upgraded, the connection is the WebSocket protocol's: no header or keep-alive
    deadline of HTTP closes a quiet subscription."""
    server = start(http_header_timeout=0.3, http_keepalive_timeout=0.3)
    async with GraphQLSocket.open(server.url, server.token("1001")) as socket:
        await socket.subscribe("inv", INVOICE_UPDATED)
        await asyncio.sleep(1.0)
        await socket.send({"type": "ping"})
        assert await socket.receive(within=2) == {"type": "pong"}


def test_an_idle_keep_alive_connection_is_closed(start: Callable[..., GatewayServer]) -> None:
    server = start(http_keepalive_timeout=0.5, http_header_timeout=5)
    with raw(server) as client:
        client.send(client.request_bytes("GET", "/healthz"))
        status, headers, _body = client.response(within=2)
        assert status == 200
        assert headers.get("connection") != "close"
        assert client.closed_within(1.5)


def test_an_oversized_header_block_is_refused(start: Callable[..., GatewayServer]) -> None:
    server = start(http_max_header_bytes=16_384)
    with raw(server) as client:
        client.send(client.request_bytes("GET", "/healthz", [("x-fits", "a" * 12_000)]))
        assert client.response(within=2)[0] == 200
    with raw(server) as client:
        request = client.request_bytes("GET", "/healthz", [("x-big", "a" * 200_000)])
        for at in range(0, len(request), 4096):
            client.send(request[at : at + 4096])
            time.sleep(0.005)
            if client.answered():  # refused: what is not yet sent is never read
                break
        else:
            raise AssertionError("200 KB of headers were all read")
        status, _headers, body = client.response(within=2)
        assert status == 400
        assert b"too large" in body
        assert client.closed_within(1)


def test_a_body_answered_before_it_was_read_is_not_taken_for_headers(
    start: Callable[..., GatewayServer],
) -> None:
    """/graphql refuses a body over 1 MB by its Content-Length, before reading it; what the
    client still sends of it is a body, not the next request's headers, and the connection
    serves that next request."""
    server = start(http_max_header_bytes=16_384)
    with raw(server) as client:
        size = 1_100_000
        headers = [("content-type", "application/json"), ("content-length", str(size))]
        client.send(client.request_bytes("POST", "/graphql", headers))
        assert client.response(within=2)[0] == 413
        for _ in range(size // 65_536):
            client.body_part(b" " * 65_536)
        client.body_part(b" " * (size % 65_536))
        client.end()
        client.http.start_next_cycle()
        client.send(client.request_bytes("GET", "/healthz"))
        assert client.response(within=2)[0] == 200


def test_a_refused_body_trickled_after_its_answer_is_cut_off(
    start: Callable[..., GatewayServer],
) -> None:
    """Answered before it was read, a body is no longer the app's to time: the header
    deadline bounds what the connection does until its next request."""
    server = start(http_header_timeout=0.5)
    with raw(server) as client:
        headers = [("content-type", "application/json"), ("content-length", "2000000")]
        client.send(client.request_bytes("POST", "/graphql", headers))
        assert client.response(within=2)[0] == 413
        started = time.monotonic()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while time.monotonic() - started < 3 and not client.answered():
                client.body_part(b" ")
                time.sleep(0.1)
        assert client.closed_within(0.5)
        assert time.monotonic() - started < 1.5


# -- bodies ---------------------------------------------------------------------------------


def _upload_path(server: GatewayServer) -> str:
    store = server.sources.files
    form = server.server.call(store.request_upload("1001", "notes.txt", "text/plain", 64))
    return "/" + form.url.split("/", 3)[3]


ROUTES: dict[str, Callable[[GatewayServer], tuple[str, str]]] = {
    "graphql": lambda server: ("/graphql", "application/json"),
    "webhook": lambda server: ("/webhooks/stripe", "application/json"),
    "upload": lambda server: (_upload_path(server), "multipart/form-data; boundary=xyz"),
}


@pytest.mark.parametrize("route", ROUTES)
def test_a_half_sent_body_is_answered_408_at_the_body_deadline(
    start: Callable[..., GatewayServer], route: str
) -> None:
    server = start(http_body_timeout=0.5, **WEBHOOK_SECRETS)
    path, content_type = ROUTES[route](server)
    with raw(server) as client:
        headers = [("content-type", content_type), ("content-length", "1000")]
        client.send(client.request_bytes("POST", path, headers))
        client.body_part(b"--xyz\r\n" if route == "upload" else b'{"query": "{ __type')
        started = time.monotonic()
        # the waiting request holds nothing else up
        assert server.http.get("/healthz", timeout=0.5).status_code == 200

        status, headers_out, body = client.response(within=2)
        waited = time.monotonic() - started
        assert status == 408
        assert 0.3 < waited < 1.5
        assert headers_out["connection"] == "close"
        [error] = json.loads(body)["errors"]
        assert error["extensions"]["code"] == "BAD_REQUEST"
        assert "did not arrive" in error["message"]
        assert client.closed_within(1)


def test_a_body_sent_slowly_but_within_the_deadline_is_read(
    start: Callable[..., GatewayServer],
) -> None:
    """The deadline is for the whole body, not for each piece; one that is done in time is
    answered as usual, and the connection stays open for the next request."""
    server = start(http_body_timeout=1.0)
    with raw(server) as client:
        headers = [("content-type", "application/json"), ("content-length", str(len(QUERY)))]
        client.send(client.request_bytes("POST", "/graphql", headers))
        for at in range(0, len(QUERY), 9):
            client.body_part(QUERY[at : at + 9])
            time.sleep(0.1)
        client.end()
        status, headers_out, body = client.response(within=2)
        assert status == 200, body
        assert json.loads(body) == {"data": {"__typename": "Query"}}
        assert headers_out.get("connection") != "close"


@pytest.fixture
def uvicorn_lines(capture_logs: Callable[..., io.StringIO]) -> Iterator[io.StringIO]:
    """The JSON log lines of the gateway and of uvicorn (whose loggers another test's
    uvicorn.Config may have stopped from propagating)."""
    buffer = capture_logs("INFO")
    uvicorn_logger = logging.getLogger("uvicorn")
    propagates = uvicorn_logger.propagate
    uvicorn_logger.propagate = True
    try:
        yield buffer
    finally:
        uvicorn_logger.propagate = propagates


def test_a_half_sent_body_holds_shutdown_only_until_its_deadline(
    make_settings: Callable[..., Settings], uvicorn_lines: io.StringIO
) -> None:
    """uvicorn waits SHUTDOWN_GRACE (20 s) for requests in flight; one waiting for the rest
    of its body is answered 408 at the body deadline instead, and the stop goes on."""
    settings = make_settings(http_body_timeout=0.5, shutdown_grace=20)
    with running_gateway(settings) as server, raw(server) as client:
        headers = [("content-type", "application/json"), ("content-length", "1000")]
        client.send(client.request_bytes("POST", "/graphql", headers))
        client.body_part(b'{"query": ')
        time.sleep(0.1)  # the request is in the app, reading its body
        answer: dict[str, Any] = {}
        reader = threading.Thread(target=lambda: answer.update(r=client.response(within=10)))
        reader.start()
        started = time.monotonic()
        server.server.stop()
        stopped = time.monotonic() - started
        reader.join(5)

    assert stopped < 5, f"the stop took {stopped:.1f} s"
    status, _headers, body = answer["r"]
    assert status == 408, body
    lines = [json.loads(line) for line in uvicorn_lines.getvalue().splitlines()]
    assert [line for line in lines if line["level"] == "error"] == []
    assert "Traceback" not in uvicorn_lines.getvalue()
    [access] = [line for line in lines if line["logger"] == "gateway.access"]
    assert access["status"] == 408


# -- X-Forwarded-For ------------------------------------------------------------------------


def _anonymous_queries(server: GatewayServer, forwarded_for: list[str]) -> list[int]:
    return [
        server.http.post(
            "/graphql", content=QUERY, headers={"X-Forwarded-For": ip, **_JSON}
        ).status_code
        for ip in forwarded_for
    ]


_JSON = {"Content-Type": "application/json"}


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    start: Callable[..., GatewayServer],
) -> None:
    """By default no peer is a proxy: a rotated X-Forwarded-For does not reset the per-IP
    limit, which counts the socket's address."""
    server = start(rate_limit_ip="3/60s")
    rotated = [f"203.0.113.{n}" for n in range(5)]
    assert _anonymous_queries(server, rotated) == [200, 200, 200, 429, 429]


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(
    start: Callable[..., GatewayServer],
) -> None:
    server = start(rate_limit_ip="3/60s", forwarded_allow_ips=["127.0.0.1"])
    rotated = [f"203.0.113.{n}" for n in range(5)]
    assert _anonymous_queries(server, rotated) == [200] * 5
    # each forwarded client has its own budget, counted as such
    assert _anonymous_queries(server, ["198.51.100.7"] * 4) == [200, 200, 200, 429]
    # a client-supplied entry before the proxy's own is not believed over the proxy's
    spoofed = ["10.9.9.9, 198.51.100.7", "10.9.9.8, 198.51.100.7"]
    assert _anonymous_queries(server, spoofed) == [429, 429]


def test_an_ordinary_client_is_untouched_by_the_deadlines(
    start: Callable[..., GatewayServer],
) -> None:
    """An ordinary client is untouched by the deadlines: a request answered, then another on
    the same pooled connection."""
    server = start(http_header_timeout=0.3, http_body_timeout=0.3, http_keepalive_timeout=2)
    with httpx.Client(base_url=server.url) as client:
        for _ in range(2):
            response = client.post("/graphql", content=QUERY, headers=_JSON)
            assert response.json() == {"data": {"__typename": "Query"}}
            time.sleep(0.4)  # past the header deadline, within keep-alive
        assert client.get("/healthz").status_code == 200
