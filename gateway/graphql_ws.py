"""GraphQL over WebSocket at /graphql: the `graphql-transport-ws` protocol.

The token comes in the `connection_init` payload as `{"Authorization": "Bearer <token>"}`;
a connection without a valid one is closed with 4403. Every operation goes through the same
pipeline as HTTP (gateway/pipeline.py: bounds, persisted documents, incoming limits,
limits, validation, cost); a refused one answers an `error` message with the same errors
HTTP would send. Subscriptions run graphql-core's `subscribe`; queries and mutations
answer one `next` and `complete`, or with @defer/@stream a `next` per payload (Apollo's
deferSpec=20220824 format, or incrementalSpec v0.2 when the subscribe payload's
extensions ask for it) and then `complete`. The connection closes (4403) when the token expires.

Bounds of its own: a message over REQUEST_MAX_BYTES closes the socket (1009, as uvicorn
does for frames over its ws_max_size); operations running at once per socket, and live
subscriptions per viewer in this process, are capped (RATE_LIMITED for the operation
past the cap). The handshake counts against the client IP's incoming limit, as a failed
connection_init does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from graphql import ExecutionResult, OperationType, subscribe
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway.auth import ANONYMOUS, Viewer
from gateway.context import Context, Services
from gateway.errors import RequestRefused
from gateway.pipeline import OperationPipeline, Ready
from gateway.schema.execution import Prepared, format_error
from gateway.schema.incremental import IncrementalAnswer, WireFormat

__all__ = ["PROTOCOL", "GraphQLWebSocket"]

log = logging.getLogger(__name__)

PROTOCOL = "graphql-transport-ws"


class _Closed(Exception):
    """The session ended (closed by us or by the client)."""


class GraphQLWebSocket:
    """The Starlette WebSocket endpoint; one `_Session` per connection."""

    def __init__(
        self,
        services: Services,
        pipeline: OperationPipeline,
        *,
        max_message_bytes: int,
        max_operations_per_socket: int,
        max_subscriptions_per_viewer: int,
        init_timeout: float = 10.0,
    ) -> None:
        self.services = services
        self.pipeline = pipeline
        self.executor = pipeline.executor
        self.max_message_bytes = max_message_bytes
        self.max_operations = max_operations_per_socket
        self.max_viewer_subscriptions = max_subscriptions_per_viewer
        self.init_timeout = init_timeout
        # live subscriptions per viewer (scope or subject) in this process
        self.live: dict[str, int] = {}

    def release(self, viewer_key: str) -> None:
        """One live subscription of the viewer has ended."""
        remaining = self.live.get(viewer_key, 1) - 1
        if remaining > 0:
            self.live[viewer_key] = remaining
        else:
            self.live.pop(viewer_key, None)

    async def handle(self, websocket: WebSocket) -> None:
        client = websocket.scope.get("client")
        client_ip = client[0] if client else "unknown"
        pipeline = self.pipeline
        try:
            # the handshake is a request of the client's IP, like any HTTP one
            await pipeline.admit(pipeline.windows(ANONYMOUS, None, client_ip))
        except RequestRefused as refused:
            if "websocket.http.response" in websocket.scope.get("extensions", {}):
                # answered like HTTP: 429 with Retry-After, before the protocol starts
                headers = {"retry-after": str(int(refused.retry_after or 1))}
                denial = Response(
                    orjson.dumps({"errors": refused.errors}),
                    status_code=refused.status,
                    media_type="application/json",
                    headers=headers,
                )
                await websocket.send_denial_response(denial)
            else:
                await websocket.close(1013, "Try again later: rate limit exceeded")
            return
        if PROTOCOL not in websocket.scope.get("subprotocols", []):
            await websocket.accept()
            await websocket.close(4406, "Subprotocol not acceptable")
            return
        await websocket.accept(subprotocol=PROTOCOL)
        await _Session(self, websocket, client_ip).run()


class _Session:
    def __init__(self, endpoint: GraphQLWebSocket, websocket: WebSocket, client_ip: str) -> None:
        self.endpoint = endpoint
        self.websocket = websocket
        self.client_ip = client_ip
        self.viewer: Viewer | None = None
        self.init_received = False
        self.operations: dict[str, asyncio.Task[None]] = {}
        self.closed = False
        self._send_lock = asyncio.Lock()
        self._timers: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        self._timers.append(asyncio.create_task(self._init_deadline()))
        try:
            while not self.closed:
                try:
                    text = await self.websocket.receive_text()
                except (WebSocketDisconnect, RuntimeError):
                    break
                except KeyError:  # a binary frame
                    await self.close(4400, "Binary frames are not part of the protocol")
                    break
                if len(text) > self.endpoint.max_message_bytes:
                    await self.close(1009, "Message too big")
                    break
                try:
                    await self.on_message(text)
                except _Closed:
                    break
        finally:
            self.closed = True
            tasks = [*self._timers, *self.operations.values()]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.websocket.close(code, reason)

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            if self.closed or self.websocket.application_state is not WebSocketState.CONNECTED:
                raise _Closed
            try:
                await self.websocket.send_text(orjson.dumps(message).decode())
            except (RuntimeError, WebSocketDisconnect):
                raise _Closed from None

    async def _init_deadline(self) -> None:
        await asyncio.sleep(self.endpoint.init_timeout)
        if self.viewer is None:
            await self.close(4408, "Connection initialisation timeout")

    async def _expiry(self, expires_at: float) -> None:
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        await self.close(4403, "Forbidden: the token expired")

    async def on_message(self, text: str) -> None:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.close(4400, "Invalid message")
            raise _Closed
        kind = message["type"]
        if kind == "connection_init":
            await self.on_init(message.get("payload"))
        elif kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "pong":
            return
        elif kind == "subscribe":
            await self.on_subscribe(message)
        elif kind == "complete":
            task = self.operations.pop(str(message.get("id")), None)
            if task is not None:
                task.cancel()
        else:
            await self.close(4400, f"Unsupported message type {kind!r}")
            raise _Closed

    async def on_init(self, payload: Any) -> None:
        if self.init_received:
            await self.close(4429, "Too many initialisation requests")
            raise _Closed
        self.init_received = True
        if payload is not None and not isinstance(payload, dict):
            await self.close(4400, "Invalid connection_init payload")
            raise _Closed
        headers = {str(k).lower(): v for k, v in (payload or {}).items()}
        authorization = headers.get("authorization")
        try:
            viewer = await self.endpoint.pipeline.authenticate(
                authorization if isinstance(authorization, str) else None, None, self.client_ip
            )
        except RequestRefused:
            viewer = None
        if viewer is None or not viewer.authenticated:
            await self.close(4403, "Forbidden")
            raise _Closed
        self.viewer = viewer
        if viewer.expires_at is not None:
            self._timers.append(asyncio.create_task(self._expiry(viewer.expires_at)))
        await self.send({"type": "connection_ack"})

    async def on_subscribe(self, message: dict[str, Any]) -> None:
        if self.viewer is None:
            await self.close(4401, "Unauthorized")
            raise _Closed
        operation_id = message.get("id")
        payload = message.get("payload")
        if (
            not isinstance(operation_id, str)
            or not operation_id
            or not isinstance(payload, dict)
            # a persisted document may come without its text
            or not isinstance(payload.get("query") or "", str)
            or not isinstance(payload.get("variables") or {}, dict)
            or not isinstance(payload.get("operationName") or "", str)
        ):
            await self.close(4400, "Invalid subscribe message")
            raise _Closed
        if operation_id in self.operations:
            await self.close(4409, f"Subscriber for {operation_id} already exists")
            raise _Closed
        request_id = secrets.token_hex(8)
        try:
            ready, variables, operation_name = await self._admit(operation_id, payload)
        except RequestRefused as refused:
            await self.send({"type": "error", "id": operation_id, "payload": refused.errors})
            return
        context = Context(self.endpoint.services, self.viewer, request_id, self.websocket)
        prepared = ready.prepared
        if ready.kind is OperationType.SUBSCRIPTION:
            assert prepared.document is not None
            # runs the field's resolver now: the listener exists before the next message
            result: Any = subscribe(
                self.endpoint.executor.schema,
                prepared.document,
                context_value=context,
                variable_values=variables,
                operation_name=operation_name,
            )
            if not isinstance(result, ExecutionResult) and not hasattr(result, "__anext__"):
                result = await result
            if isinstance(result, ExecutionResult):
                await self.send(
                    {"type": "next", "id": operation_id, "payload": _payload(result, request_id)}
                )
                await self.send({"type": "complete", "id": operation_id})
                return
            task = asyncio.create_task(self._stream(operation_id, result, request_id))
            # counted from now until the task is done, however it ends (even cancelled
            # before it ever ran)
            key = self._viewer_key()
            live = self.endpoint.live
            live[key] = live.get(key, 0) + 1
            task.add_done_callback(lambda _task: self.endpoint.release(key))
        else:
            task = asyncio.create_task(
                self._single(
                    operation_id, prepared, context, variables, operation_name, _wire(payload)
                )
            )
        self.operations[operation_id] = task

    async def _admit(
        self, operation_id: str, payload: dict[str, Any]
    ) -> tuple[Ready, dict[str, Any] | None, str | None]:
        """The pipeline's phases for one subscribe message, then this transport's caps."""
        assert self.viewer is not None
        endpoint = self.endpoint
        pipeline = endpoint.pipeline
        operation = pipeline.operation(payload)
        document = pipeline.document(operation)
        await pipeline.admit(pipeline.windows(self.viewer, None, self.client_ip))
        ready = await pipeline.prepare(document, operation)
        if len(self.operations) >= endpoint.max_operations:
            raise RequestRefused(
                429,
                f"at most {endpoint.max_operations} operations may run at once on a connection",
                "RATE_LIMITED",
            )
        if ready.kind is OperationType.SUBSCRIPTION:
            key = self._viewer_key()
            if endpoint.live.get(key, 0) >= endpoint.max_viewer_subscriptions:
                raise RequestRefused(
                    429,
                    f"at most {endpoint.max_viewer_subscriptions} live subscriptions per viewer",
                    "RATE_LIMITED",
                )
        return ready, operation.variables, operation.operation_name

    def _viewer_key(self) -> str:
        assert self.viewer is not None
        return self.viewer.scope if self.viewer.customer_id else f"sub:{self.viewer.subject}"

    async def _stream(
        self, operation_id: str, stream: AsyncIterator[ExecutionResult], request_id: str
    ) -> None:
        try:
            async for result in stream:
                await self.send(
                    {"type": "next", "id": operation_id, "payload": _payload(result, request_id)}
                )
            await self.send({"type": "complete", "id": operation_id})
        except _Closed:
            pass
        except Exception:
            log.exception("subscription failed", extra={"request_id": request_id})
            with contextlib.suppress(_Closed):
                await self.send(
                    {
                        "type": "error",
                        "id": operation_id,
                        "payload": [_error("Internal server error", "INTERNAL_SERVER_ERROR")],
                    }
                )
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
            if self.operations.get(operation_id) is asyncio.current_task():
                del self.operations[operation_id]

    async def _single(
        self,
        operation_id: str,
        prepared: Prepared,
        context: Context,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        wire: WireFormat,
    ) -> None:
        answer: dict[str, Any] | IncrementalAnswer | None = None
        try:
            answer = await self.endpoint.executor.execute(
                prepared, context, variables, operation_name, wire=wire
            )
            if isinstance(answer, IncrementalAnswer):
                # @defer/@stream: a `next` per payload
                await self.send(
                    {"type": "next", "id": operation_id, "payload": await answer.first()}
                )
                async for payload in answer.rest():
                    await self.send({"type": "next", "id": operation_id, "payload": payload})
            else:
                await self.send({"type": "next", "id": operation_id, "payload": answer})
            await self.send({"type": "complete", "id": operation_id})
        except _Closed:
            pass
        finally:
            if isinstance(answer, IncrementalAnswer):
                await answer.aclose()  # cancelled by `complete`: the parts not sent stop
            if self.operations.get(operation_id) is asyncio.current_task():
                del self.operations[operation_id]


def _payload(result: ExecutionResult, request_id: str) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if result.errors:
        payload["errors"] = [format_error(e, request_id) for e in result.errors]
    payload["data"] = result.data
    return payload


def _wire(payload: dict[str, Any]) -> WireFormat:
    """The incremental format of an operation's payloads: Apollo's deferSpec=20220824
    (what Apollo Client's Defer20220824Handler reads over graphql-ws), unless the subscribe
    payload's extensions ask for `{"incrementalSpec": "v0.2"}`."""
    extensions = payload.get("extensions")
    if isinstance(extensions, dict) and extensions.get("incrementalSpec") == "v0.2":
        return WireFormat.INCREMENTAL_V02
    return WireFormat.DEFER_20220824


def _error(message: str, code: str = "GRAPHQL_VALIDATION_FAILED") -> dict[str, Any]:
    return {"message": message, "extensions": {"code": code}}
