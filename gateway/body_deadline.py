"""HTTP_BODY_TIMEOUT: a request's whole body within so many seconds of the app's first read.

Without it a client that sends half a body is waited for without end, and at SIGTERM uvicorn
waits SHUTDOWN_GRACE for it before cancelling the request (a 500 and a traceback). The
server's header deadline (gateway.server) ends where this one begins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.errors import BodyTimeout

__all__ = ["BODY_IN", "BodyDeadline", "BodyDeadlines"]

log = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
# A scope extension of the gateway's own HTTP protocol (gateway.server), present (its value
# an empty dict, as ASGI's extensions are) once the request's whole body is parsed. Nearly
# every body comes in the read that completes its headers, before the app runs: such a
# request has nothing left to time, and is spared the wrapping.
BODY_IN = "gateway.body_in"
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyDeadlines:
    """The body reads in progress of one app's requests, and one timer for all of them.

    A timer per request (asyncio.timeout around each receive) cost three times what this
    does on the whole-response cache hit path (design §12), though nearly every body is in
    when the app reads it (and with BODY_IN such a request is not wrapped at all). Here a
    read costs a set insertion, and one tick every `period` seconds, running while reads
    come in, cancels the reads past their deadline: it ends them up to one period late, a
    tenth of the deadline (at most 1 s).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.period = min(1.0, max(0.02, seconds / 10))
        self.reading: set[BodyDeadline] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ticking = False
        self.used = False  # a read began since the last tick

    def request(self, scope: Message, receive: Receive, send: Send) -> tuple[Receive, Send]:
        """One request's receive and send, its body bounded by this deadline (as they are
        when the server says the body is all in already)."""
        extensions = scope.get("extensions")
        if extensions is not None and BODY_IN in extensions:
            return receive, send
        body = BodyDeadline(self, receive, send, scope["path"])
        return body.receive, body.send

    def keep_ticking(self) -> None:
        """Makes sure the tick runs, on this event loop (an app may outlive a loop: a test's)."""
        if self.ticking and self.loop is not None and not self.loop.is_closed():
            return
        self.ticking = True
        self.loop = asyncio.get_running_loop()
        self.loop.call_later(self.period, self.tick)

    def tick(self) -> None:
        assert self.loop is not None
        now = time.monotonic()
        for read in [read for read in self.reading if read.deadline <= now]:
            read.expire()
        if self.used or self.reading:
            self.used = False
            self.loop.call_later(self.period, self.tick)
        else:
            self.ticking = False


class BodyDeadline:
    """One HTTP request's receive and send: the whole body must arrive within the deadline
    of the app's first read, else a read raises BodyTimeout (a RequestRefused: /graphql
    answers it like its other refusals, the Starlette routes through the app's handler),
    and the response then sent closes the connection."""

    __slots__ = (
        "deadline",
        "deadlines",
        "done",
        "expired",
        "inner_receive",
        "inner_send",
        "path",
        "task",
    )

    def __init__(self, deadlines: BodyDeadlines, receive: Receive, send: Send, path: str) -> None:
        self.deadlines = deadlines
        self.inner_receive = receive
        self.inner_send = send
        self.path = path
        self.deadline = 0.0  # time.monotonic() by which the body is in; set at the first read
        self.done = False  # the body is complete: what is left to receive is a disconnect
        self.expired = False
        self.task: asyncio.Task[Any] | None = None

    async def receive(self) -> Message:
        if self.done:
            return await self.inner_receive()
        deadlines = self.deadlines
        now = time.monotonic()
        if not self.deadline:
            self.deadline = now + deadlines.seconds
        elif now >= self.deadline:
            raise self.timeout()
        self.task = task = asyncio.current_task()
        deadlines.reading.add(self)
        deadlines.used = True
        deadlines.keep_ticking()
        try:
            message = await self.inner_receive()
        except asyncio.CancelledError:
            # ours (see expire) unless someone else cancelled the request too, e.g. uvicorn
            # at the end of SHUTDOWN_GRACE: that cancellation goes on
            if self.expired and task is not None and task.uncancel() == 0:
                raise self.timeout() from None
            raise
        finally:
            deadlines.reading.discard(self)
        if not message.get("more_body", False):
            self.done = True
        return message

    def expire(self) -> None:
        """The deadline passed while a read waits: end that wait (once)."""
        if self.expired:
            return
        self.expired = True
        self.deadlines.reading.discard(self)
        if self.task is not None:
            self.task.cancel()

    def timeout(self) -> BodyTimeout:
        self.expired = True
        seconds = self.deadlines.seconds
        log.info("request body too slow", extra={"path": self.path, "seconds": seconds})
        return BodyTimeout(seconds)

    def send(self, message: Message) -> Awaitable[None]:
        # not a coroutine of its own: the inner send's is awaited (a frame less a message)
        if self.expired and message["type"] == "http.response.start":
            # the rest of the body may still be on its way: it must not be read as a request
            headers = [*message.get("headers", []), (b"connection", b"close")]
            message = {**message, "headers": headers}
        return self.inner_send(message)
