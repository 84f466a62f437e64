"""Real clients and peers for event tests: a graphql-transport-ws client, an SMTP sink,
and `portal-gateway` subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from websockets.asyncio.client import ClientConnection, connect

from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway
from tests.servers import free_port
from tests.webhooks.signing import WEBHOOK_SECRETS

ROOT = Path(__file__).resolve().parents[2]

INVOICE_UPDATED = "subscription { invoiceUpdated { id status amountDue amountPaid source } }"
TICKET_UPDATED = "subscription { ticketUpdated { id status subject } }"


class GraphQLSocket:
    """A graphql-transport-ws client over a real WebSocket."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, base_url: str, token: str | None, *, ack: bool = True
    ) -> AsyncIterator[GraphQLSocket]:
        url = base_url.replace("http://", "ws://") + "/graphql"
        async with connect(url, subprotocols=["graphql-transport-ws"]) as connection:
            socket = cls(connection)
            if token is not None:
                payload = {"Authorization": f"Bearer {token}"}
                await socket.send({"type": "connection_init", "payload": payload})
                if ack:
                    assert await socket.receive() == {"type": "connection_ack"}
            yield socket

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def receive(self, within: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.connection.recv(), within)
        message: dict[str, Any] = json.loads(raw)
        return message

    async def subscribe(self, operation_id: str, query: str) -> None:
        """Subscribe, then ping: the pong proves the server has registered the listener
        (it handles one connection's messages in order)."""
        await self.send({"type": "subscribe", "id": operation_id, "payload": {"query": query}})
        await self.send({"type": "ping"})
        assert await self.receive() == {"type": "pong"}

    async def next_payload(self, operation_id: str, within: float = 5.0) -> dict[str, Any]:
        message = await self.receive(within)
        assert message["type"] == "next", message
        assert message["id"] == operation_id
        payload: dict[str, Any] = message["payload"]
        return payload

    async def assert_silent(self, within: float) -> None:
        """Nothing arrives within `within` seconds (a ping round trip ends the wait)."""
        await asyncio.sleep(within)
        await self.send({"type": "ping"})
        assert await self.receive() == {"type": "pong"}


class _Sink:
    """aiosmtpd handler: keeps accepted messages; can hold the next DATA until released."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refuse = 0  # answer this many DATA commands with a temporary failure
        self.refused = 0
        self.delay = 0.0  # seconds before accepting
        self.hold_next = False
        self.holding = threading.Event()  # a DATA is being held
        self.release = threading.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refused < self.refuse:
            self.refused += 1
            return "451 4.3.0 mailbox busy, try again later"
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.hold_next:
            self.hold_next = False
            self.holding.set()
            await asyncio.to_thread(self.release.wait)
            # the client that sent it is gone by now: it never learns of a delivery
            return "451 4.3.0 try again later"
        content = envelope.content
        assert isinstance(content, bytes)
        self.messages.append(message_from_bytes(content))
        return "250 OK"


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[str, _Sink]]:
    """A real SMTP server (aiosmtpd) on a free port: (SMTP_URL, sink)."""
    sink = _Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", sink
    finally:
        sink.release.set()
        controller.stop()


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


async def wait_for_async(predicate: Any, within: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


class GatewayProcess:
    """`portal-gateway <command>` in a subprocess; stderr lines are collected."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path) -> None:
        script = Path(sys.executable).parent / "portal-gateway"
        argv = (
            [str(script), *command]
            if script.exists()
            else [
                sys.executable,
                "-m",
                "gateway.cli",
                *command,
            ]
        )
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            argv,
            env={**base, **env},
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def wait_for_line(self, text: str, timeout: float = 15.0) -> None:
        def seen() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}: {''.join(self.lines)}")
            return any(text in line for line in self.lines)

        wait_for(seen, timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return self.process.returncode


@contextlib.contextmanager
def gateway_process(command: list[str], env: dict[str, str], cwd: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(command, env, cwd)
    try:
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def gateways(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., GatewayServer]]:
    """Starts gateways under uvicorn (every webhook secret set; keyword arguments override
    settings); stops them all on exit."""
    with contextlib.ExitStack() as stack:

        def start(**overrides: Any) -> GatewayServer:
            values = {**WEBHOOK_SECRETS, "retry_base_delay": 0.01, **overrides}
            settings = make_settings(**values)
            return stack.enter_context(running_gateway(settings))

        yield start
