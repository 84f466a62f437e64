"""HTTP_BODY_TIMEOUT's own rules, where a real server cannot time the case: whose
cancellation a read ends with, and what is bounded once the body is in. (What a client
sees over a socket is in tests/test_server.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from typing import Any

import pytest

from gateway.body_deadline import BODY_IN, BodyDeadline, BodyDeadlines
from gateway.errors import BodyTimeout


class Client:
    """The server side of one request's ASGI messages, fed by the test."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self.sent: list[MutableMapping[str, Any]] = []

    async def receive(self) -> MutableMapping[str, Any]:
        return await self.messages.get()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)


START = {"type": "http.response.start", "status": 200, "headers": [(b"a", b"b")]}
SCOPE: dict[str, Any] = {"type": "http", "path": "/graphql"}


async def test_a_read_past_the_deadline_raises_body_timeout() -> None:
    client = Client()
    receive, send = BodyDeadlines(0.2).request(SCOPE, client.receive, client.send)
    client.messages.put_nowait({"type": "http.request", "body": b"{", "more_body": True})
    started = time.monotonic()
    assert (await receive())["body"] == b"{"
    with pytest.raises(BodyTimeout) as raised:
        await receive()  # the rest never comes
    assert 0.15 < time.monotonic() - started < 1
    assert raised.value.status == 408
    await send(START)
    assert client.sent[0]["headers"] == [(b"a", b"b"), (b"connection", b"close")]


async def test_a_read_cancelled_by_someone_else_stays_cancelled() -> None:
    """uvicorn cancels what runs past SHUTDOWN_GRACE: that is no late body, and it ends the
    request as a cancellation, also when the deadline passes at the same moment."""
    client = Client()
    receive, _send = BodyDeadlines(5).request(SCOPE, client.receive, client.send)
    reading = asyncio.create_task(receive())
    await asyncio.sleep(0.05)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading

    body = BodyDeadline(BodyDeadlines(5), client.receive, client.send, "/graphql")
    reading = asyncio.create_task(body.receive())
    await asyncio.sleep(0.05)
    body.expire()  # what the tick does at the deadline
    reading.cancel()  # and uvicorn, before the read resumes
    with pytest.raises(asyncio.CancelledError):
        await reading


async def test_once_the_body_is_in_waiting_for_a_disconnect_is_not_bounded() -> None:
    """A streamed answer listens for the client's disconnect through receive for as long
    as it streams (a download): that is no body read."""
    client = Client()
    receive, send = BodyDeadlines(0.1).request(SCOPE, client.receive, client.send)
    client.messages.put_nowait({"type": "http.request", "body": b"", "more_body": False})
    await receive()
    waiting = asyncio.create_task(receive())
    await asyncio.sleep(0.4)
    assert not waiting.done()
    client.messages.put_nowait({"type": "http.disconnect"})
    assert (await waiting)["type"] == "http.disconnect"
    await send(START)
    assert client.sent[0]["headers"] == [(b"a", b"b")]  # the connection may be kept


def test_a_body_the_server_has_read_whole_is_not_wrapped() -> None:
    """The gateway's HTTP protocol marks a request whose body was parsed with its headers
    (nearly all): nothing is left to time, and the app gets the server's own callables."""
    client = Client()
    scope = {**SCOPE, "extensions": {BODY_IN: {}}}
    assert BodyDeadlines(1).request(scope, client.receive, client.send) == (
        client.receive,
        client.send,
    )


async def test_one_tick_ends_every_late_read_of_the_app() -> None:
    deadlines = BodyDeadlines(0.2)
    clients = [Client() for _ in range(50)]
    reads = [asyncio.create_task(deadlines.request(SCOPE, c.receive, c.send)[0]()) for c in clients]
    done, pending = await asyncio.wait(reads, timeout=1)
    assert not pending
    assert all(isinstance(read.exception(), BodyTimeout) for read in done)
    assert deadlines.reading == set()
