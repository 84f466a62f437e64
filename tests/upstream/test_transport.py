"""The provider calls' transport (httpx's interface onto aiohttp's client) against real
sockets, on asyncio's loop and on uvloop (what uvicorn runs the gateway on): framing,
keep-alive, limits, timeouts, TLS, proxies, failures mapped to httpx's exceptions, and what
the adapter adds: headers with CR/LF refused, answers past a size refused, a read deadline.

The servers here are raw asyncio servers that write exactly the bytes a test scripts, so
the framings a library server would never produce (close-delimited bodies, 1xx, garbage)
are covered too.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import ipaddress
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.upstream.transport import AiohttpTransport, AnswerTooLarge

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    return LOOPS[request.param]


Answer = Callable[[bytes, bytes], bytes | Awaitable[bytes | None] | None]


class Server:
    """A raw HTTP server: `answer(request_head, body)` gives (or, async, waits and then
    gives) the bytes to write back, None to close without answering; every request and
    every accepted connection is recorded."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                out = self.answer(head, body)
                if inspect.isawaitable(out):
                    out = await out
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if b"connection: close" in out.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def transport(**kwargs: Any) -> AiohttpTransport:
    options = {
        "max_connections": 4,
        "keepalive_expiry": 30.0,
        "read_timeout": 5.0,
        "max_response_bytes": 1_000_000,
        **kwargs,
    }
    return AiohttpTransport(**options)


def client(**kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport(**kwargs), timeout=5)


def test_answers_status_headers_body_and_sends_the_request_as_given(run: Any) -> None:
    async def body() -> None:
        server = await Server(lambda head, body: ok(b'{"n":1}', b"X-Thing: a\r\n")).start()
        async with client() as http:
            answer = await http.post(
                server.url + "/v1/items?limit=10&q=a%20b",
                json={"ids": ["1"]},
                headers={"Authorization": "Bearer t"},
            )
        await server.stop()
        assert answer.status_code == 200
        assert answer.reason_phrase == "OK"
        assert answer.headers["x-thing"] == "a"
        assert answer.json() == {"n": 1}
        [(head, sent)] = server.requests
        assert head.startswith(b"POST /v1/items?limit=10&q=a%20b HTTP/1.1\r\n")
        sent_headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if line)
        assert sent_headers[b"Authorization"] == b"Bearer t"
        assert sent_headers[b"Host"] == server.url.removeprefix("http://").encode()
        assert sent == b'{"ids":["1"]}'

    run(body())


def test_keep_alive_reuses_one_connection(run: Any) -> None:
    async def body() -> None:
        server = await Server(lambda head, body: ok()).start()
        async with client() as http:
            for _ in range(5):
                assert (await http.get(server.url + "/")).status_code == 200
        await server.stop()
        assert server.connections == 1

    run(body())


def test_chunked_and_close_delimited_bodies_are_read_whole(run: Any) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end"

    async def body() -> None:
        answers = iter([chunked, chunked, until_close])
        server = await Server(lambda head, body: next(answers)).start()
        async with client() as http:
            assert (await http.get(server.url + "/a")).text == "hello world"
            assert (await http.get(server.url + "/b")).text == "hello world"
            assert (await http.get(server.url + "/c")).text == "to the end"
        await server.stop()
        assert server.connections == 1  # chunked kept the connection; the close ended it

    run(body())


def test_head_has_no_body_and_informational_answers_are_skipped(run: Any) -> None:
    def answer(head: bytes, _body: bytes) -> bytes:
        if head.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 123\r\n\r\n"
        return b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after")

    async def body() -> None:
        server = await Server(answer).start()
        async with client() as http:
            head = await http.head(server.url + "/file")
            assert head.status_code == 200
            assert head.content == b""
            assert head.headers["content-length"] == "123"
            answer_ = await http.get(server.url + "/x")
            assert answer_.status_code == 200
            assert answer_.text == "after"
        await server.stop()

    run(body())


def test_gzip_answers_are_decoded(run: Any) -> None:
    import gzip

    packed = gzip.compress(b'{"zipped":true}')

    async def body() -> None:
        server = await Server(lambda head, body: ok(packed, b"Content-Encoding: gzip\r\n")).start()
        async with client() as http:
            assert (await http.get(server.url + "/")).json() == {"zipped": True}
        await server.stop()

    run(body())


def test_a_body_that_does_not_decode_raises_httpx_decoding_error(run: Any) -> None:
    """A provider's broken gzip raises httpx's DecodingError, a RequestError the upstream
    client counts as a failed attempt."""
    answers = iter([ok(b"not gzip at all", b"Content-Encoding: gzip\r\n"), ok(b"fine")])

    async def body() -> None:
        server = await Server(lambda head, body: next(answers)).start()
        async with client() as http:
            with pytest.raises(httpx.DecodingError):
                await http.get(server.url + "/broken")
            assert (await http.get(server.url + "/next")).text == "fine"
        await server.stop()

    run(body())


def test_a_kept_alive_connection_the_server_closed_is_not_used_again(run: Any) -> None:
    async def body() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(ok())  # keep-alive by the headers, then closed (an idle timeout)
                await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with client() as http:
            assert (await http.get(url)).status_code == 200
            await asyncio.sleep(0.05)  # the close reaches the idle connection
            assert (await http.get(url)).status_code == 200
        server.close()

    run(body())


def test_a_get_whose_kept_alive_connection_died_unnoticed_is_sent_once_more(run: Any) -> None:
    """The server closed the connection just as the call was written on it (a keep-alive
    race): an idempotent call goes again, once, on a fresh connection."""

    async def body() -> None:
        answers = iter([ok(b"1"), None, ok(b"2")])
        server = await Server(lambda head, body: next(answers)).start()
        async with client() as http:
            assert (await http.get(server.url + "/a")).text == "1"
            assert (await http.get(server.url + "/b")).text == "2"
        await server.stop()
        assert len(server.requests) == 3
        assert server.connections == 2

    run(body())


@pytest.mark.parametrize("kept_alive", [True, False], ids=["kept-alive", "fresh"])
def test_a_post_the_server_drops_unanswered_is_not_sent_twice(run: Any, kept_alive: bool) -> None:
    """A non-idempotent call is never repeated by the transport, on a kept-alive connection
    or a fresh one: the upstream client decides whether it may be (idempotency key)."""

    async def body() -> None:
        answers = iter([ok(b"1"), None, ok(b"never")] if kept_alive else [None, ok(b"never")])
        server = await Server(lambda head, body: next(answers)).start()
        async with client() as http:
            if kept_alive:
                assert (await http.get(server.url + "/a")).text == "1"
            with pytest.raises(httpx.RemoteProtocolError):
                await http.post(server.url + "/charge", content=b"x")
        await server.stop()
        assert [head.split(b" ")[0] for head, _body in server.requests][-1:] == [b"POST"]
        assert len(server.requests) == (2 if kept_alive else 1)

    run(body())


def test_at_most_max_connections_at_once_the_rest_wait_their_turn(run: Any) -> None:
    async def body() -> None:
        in_flight = 0
        most = 0

        async def answer(_head: bytes, _body: bytes) -> bytes:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1
            return ok()

        server = await Server(answer).start()
        async with client(max_connections=3) as http:
            answers = await asyncio.gather(*(http.get(server.url + "/") for _ in range(12)))
        await server.stop()
        assert [a.status_code for a in answers] == [200] * 12
        assert most == 3
        assert server.connections == 3

    run(body())


def test_timeouts_are_httpx_timeouts_and_the_connection_is_not_reused(run: Any) -> None:
    async def body() -> None:
        delays = iter([0.5, 0.0])

        async def answer(_head: bytes, _body: bytes) -> bytes:
            await asyncio.sleep(next(delays))
            return ok()

        server = await Server(answer).start()
        async with client() as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(server.url + "/", timeout=0.1)
            assert (await http.get(server.url + "/")).status_code == 200
        await server.stop()
        assert server.connections == 2  # the timed-out connection was closed, not reused

    run(body())


def test_refused_connection_is_a_connect_error(run: Any) -> None:
    async def body() -> None:
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        async with client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/")

    run(body())


def test_garbage_answer_is_a_protocol_error(run: Any) -> None:
    async def body() -> None:
        server = await Server(lambda head, body: b"SMTP ready\r\n\r\n").start()
        async with client() as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(server.url + "/")
        await server.stop()

    run(body())


def test_a_cancelled_call_does_not_leave_its_connection_in_the_pool(run: Any) -> None:
    async def body() -> None:
        delays = iter([0.2, 0.0])  # the first answer comes after its caller gave up

        async def answer(head: bytes, _body: bytes) -> bytes:
            await asyncio.sleep(next(delays))
            return ok(head.split(b" ")[1])  # the path it answers

        server = await Server(answer).start()
        async with client() as http:
            call = asyncio.create_task(http.get(server.url + "/first"))
            await asyncio.sleep(0.05)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            # on the cancelled call's connection, the late "/first" would be read as this
            # call's answer
            assert (await http.get(server.url + "/second")).text == "/second"
        await server.stop()
        assert server.connections == 2

    run(body())


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_verifies_the_certificate(run: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def body() -> None:
        server = await Server(lambda head, body: ok(b"secret")).start(server_context)
        async with client(verify=trusting) as http:
            assert (await http.get(server.url + "/")).text == "secret"
        async with client() as http:  # certifi's roots do not know this certificate
            with pytest.raises(httpx.ConnectError):
                await http.get(server.url + "/")
        await server.stop()

    run(body())


# What the adapter adds --------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Customer": "1001\r\nX-Admin: yes"},
        {"X-Customer": "1001\nGET /admin HTTP/1.1"},
        {"X-Customer": "1001\x00"},
    ],
    ids=["crlf", "lf", "nul"],
)
def test_a_header_with_cr_lf_or_nul_is_refused_before_anything_connects(
    run: Any, headers: dict[str, str]
) -> None:
    async def body() -> None:
        server = await Server(lambda head, body: ok()).start()
        async with client() as http:
            with pytest.raises(httpx.LocalProtocolError, match="CR, LF or NUL"):
                await http.get(server.url + "/", headers=headers)
        await server.stop()
        assert server.connections == 0
        assert server.requests == []

    run(body())


def _bomb(size: int) -> bytes:
    import gzip

    return gzip.compress(b"\0" * size, compresslevel=9)


@pytest.mark.parametrize(
    "answer",
    [
        ok(b"x" * 2_000_000),  # says its length
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (100_000, b"y" * 100_000) for _ in range(20))
        + b"0\r\n\r\n",  # does not
        ok(_bomb(50_000_000), b"Content-Encoding: gzip\r\n"),  # 50 KB that inflate to 50 MB
    ],
    ids=["content-length", "chunked", "gzip-bomb"],
)
def test_an_answer_past_the_size_limit_fails_without_being_held(run: Any, answer: bytes) -> None:
    async def body() -> None:
        server = await Server(lambda head, body: answer).start()
        async with client(max_response_bytes=1_000_000) as http:
            with pytest.raises(AnswerTooLarge, match="1000000"):
                await http.get(server.url + "/big")
        await server.stop()

    run(body())


def test_an_answer_at_the_size_limit_is_read(run: Any) -> None:
    async def body() -> None:
        packed = _bomb(1_000_000)
        answers = iter([ok(b"x" * 1_000_000), ok(packed, b"Content-Encoding: gzip\r\n")])
        server = await Server(lambda head, body: next(answers)).start()
        async with client(max_response_bytes=1_000_000) as http:
            assert len((await http.get(server.url + "/a")).content) == 1_000_000
            assert (await http.get(server.url + "/b")).content == b"\0" * 1_000_000
        await server.stop()

    run(body())


def test_a_call_without_a_timeout_still_has_the_transports_read_deadline(run: Any) -> None:
    async def body() -> None:
        async def answer(_head: bytes, _body: bytes) -> bytes:
            await asyncio.sleep(5)
            return ok()

        server = await Server(answer).start()
        http = httpx.AsyncClient(transport=transport(read_timeout=0.2), timeout=None)
        async with http:
            started = asyncio.get_running_loop().time()
            with pytest.raises(httpx.ReadTimeout):
                await http.get(server.url + "/slow")
            assert asyncio.get_running_loop().time() - started < 2
        await server.stop()

    run(body())


def test_proxies_from_the_environment_are_used_and_no_proxy_bypasses_them(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        proxy = await Server(lambda head, body: ok(b"via proxy")).start()
        origin = await Server(lambda head, body: ok(b"direct")).start()
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "localhost")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("http_proxy", raising=False)
        async with client() as http:
            assert (await http.get("http://provider.example/v1/items?x=1")).text == "via proxy"
            # 127.0.0.1 is not in NO_PROXY: proxied too
            assert (await http.get(origin.url + "/")).text == "via proxy"
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with client() as http:
            assert (await http.get(origin.url + "/")).text == "direct"
        await proxy.stop()
        await origin.stop()
        first_line = proxy.requests[0][0].split(b"\r\n")[0]
        assert first_line == b"GET http://provider.example/v1/items?x=1 HTTP/1.1"
        assert len(proxy.requests) == 2
        assert len(origin.requests) == 1

    run(body())


def test_a_proxy_that_cannot_be_reached_is_a_proxy_error(run: Any) -> None:
    async def body() -> None:
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        async with client(proxy=f"http://127.0.0.1:{port}") as http:
            with pytest.raises(httpx.ProxyError):
                await http.get("http://provider.example/")

    run(body())
