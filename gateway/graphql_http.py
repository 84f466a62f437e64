"""GraphQL over HTTP at /graphql, as a raw ASGI endpoint. Its exchange (`respond`) and its
phases from the document on (`GraphQLEndpoint.run`) serve the REST facade too (gateway/rest/).

Raw ASGI rather than a Starlette route: the response-cache hit path is the hottest path of
the gateway (DESIGN §12: warm pages are measured in thousands per second), and here it costs
one header scan, one body read, one cache round trip and two `send` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from graphql import OperationType
from strawberry.http.streaming import MultipartTransport

from gateway import tracing
from gateway.auth import Viewer
from gateway.cache.entity import DeferredWrites, deferred_writes
from gateway.cache.response import CachedResponse, ResponseCache, with_cache_extension
from gateway.context import Context, Services
from gateway.cors import Cors
from gateway.errors import RequestRefused
from gateway.observability import (
    REQUEST_SECONDS,
    REQUESTS,
    RESPONSE_CACHE,
    RequestNote,
    labelled,
    log_request,
    request_id_from,
    request_id_var,
    request_note_var,
)
from gateway.pipeline import Operation, OperationPipeline, json_object
from gateway.schema.incremental import IncrementalAnswer, WireFormat

__all__ = [
    "Answer",
    "GraphQLEndpoint",
    "HttpRequest",
    "StreamedAnswer",
    "error_body",
    "incremental_wire",
    "loads",
    "read_body",
    "respond",
]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

GRAPHIQL_HTML = Path(__file__).parent / "templates" / "graphiql.html"
_JSON = [(b"content-type", b"application/json")]
_HTML = [
    (b"content-type", b"text/html; charset=utf-8"),
    # GraphiQL's assets are all served by the gateway itself; nothing else may load
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        b"frame-ancestors 'none'",
    ),
]
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
_PREFLIGHT = (
    b"authorization",
    b"x-api-key",
    b"apollo-require-preflight",
    b"x-apollo-operation-name",
)
_JSON_TYPES = (b"application/json", b"application/graphql-response+json")


def error_body(message: str, code: str, **extensions: Any) -> bytes:
    return orjson.dumps(
        {"errors": [{"message": message, "extensions": {"code": code, **extensions}}]}
    )


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
# an answer whose body goes out in parts as they are made (multipart/mixed, @defer/@stream)
StreamedAnswer = tuple[int, list[tuple[bytes, bytes]], AsyncGenerator[bytes, None]]

# strawberry's writer of multipart/mixed parts for incremental delivery (boundary "-")
_MULTIPART = MultipartTransport()
_WIRE_PARAMETERS = {
    ("deferspec", "20220824"): WireFormat.DEFER_20220824,
    ("incrementalspec", "v0.2"): WireFormat.INCREMENTAL_V02,
}


def incremental_wire(accept: bytes) -> WireFormat | None:
    """The incremental delivery format an Accept header allows, or None: the first
    `multipart/mixed` range with `deferSpec=20220824` (Apollo Client, Apollo Router),
    `incrementalSpec=v0.2`, or neither (the working group's format, as v0.2); not one
    with `q=0` or a `subscriptionSpec` (multipart subscriptions, not served here)."""
    for media_range in accept.decode("latin-1").split(","):
        kind, *parameters = (part.strip() for part in media_range.split(";"))
        if kind.lower() != "multipart/mixed":
            continue
        pairs = []
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            pairs.append((name.strip().lower(), value.strip().strip('"').lower()))
        names = {name for name, _ in pairs}
        if ("q", "0") in pairs or "subscriptionspec" in names:
            continue
        for pair in pairs:
            if pair in _WIRE_PARAMETERS:
                return _WIRE_PARAMETERS[pair]
        if not names & {"deferspec", "incrementalspec"}:
            return WireFormat.INCREMENTAL_V02
    return None


class HttpRequest:
    """What an endpoint (/graphql, /api) reads of one HTTP request."""

    __slots__ = ("after", "fills", "headers", "method", "note", "path", "query_string")

    def __init__(self, scope: Scope) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query_string: bytes = scope.get("query_string", b"")
        # header names arrive lower-cased; the last of repeated headers wins
        self.headers: dict[bytes, bytes] = dict(scope["headers"])
        self.note = RequestNote()  # what its access log line reports
        # cache fills that finish after the answer has gone out (see GraphQLEndpoint.__call__):
        # the entity fills of the execution, held until then, and the response cache's entry
        self.fills: DeferredWrites | None = None
        self.after: list[Awaitable[object]] = []

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None


class GraphQLEndpoint:
    def __init__(
        self,
        services: Services,
        pipeline: OperationPipeline,
        responses: ResponseCache | None,
        cors: Cors,
        *,
        max_body_bytes: int,
        graphiql: bool = True,
    ) -> None:
        self.services = services
        self.pipeline = pipeline
        self.executor = pipeline.executor
        self.responses = responses
        # seconds per provider kind (PROVIDER_SOFT_DEADLINES), for clients that accept parts
        self.soft_deadlines = services.settings.soft_deadlines()
        self.cors = cors
        self.max_body_bytes = max_body_bytes
        self._graphiql = GRAPHIQL_HTML.read_bytes() if graphiql else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(scope, receive, send, "graphql", self._answer, self.cors)

    async def _answer(
        self, request: HttpRequest, receive: Receive, request_id: str, client_ip: str
    ) -> Answer | StreamedAnswer:
        if request.method == "OPTIONS":
            return 204, [], b""
        if request.method not in ("GET", "POST"):
            return (
                405,
                [*_JSON, (b"allow", b"GET, POST, OPTIONS")],
                error_body("use GET or POST", "BAD_REQUEST"),
            )
        if (
            request.method == "GET"
            and b"query=" not in request.query_string
            and b"extensions=" not in request.query_string
            and b"text/html" in request.headers.get(b"accept", b"")
            and self._graphiql is not None
        ):
            return 200, list(_HTML), self._graphiql
        try:
            return await self._run(request, receive, request_id, client_ip)
        except RequestRefused as refused:
            headers = list(_JSON)
            if refused.retry_after is not None:
                headers.append((b"retry-after", str(int(refused.retry_after)).encode()))
            return refused.status, headers, orjson.dumps({"errors": refused.errors})

    async def _run(
        self, request: HttpRequest, receive: Receive, request_id: str, client_ip: str
    ) -> Answer | StreamedAnswer:
        """HTTP's own decode phase and CSRF check, then `run`, in parts where the client
        accepts multipart/mixed (@defer, @stream, soft deadlines)."""
        operation = await _read_operation(self.pipeline, request, receive, self.max_body_bytes)
        if request.method == "GET" and not any(h in request.headers for h in _PREFLIGHT):
            # a header a cross-site page cannot send without a CORS preflight
            raise RequestRefused(
                400,
                "a GET query needs an Authorization, X-API-Key or "
                "Apollo-Require-Preflight header (CSRF protection)",
            )
        wire = incremental_wire(request.headers.get(b"accept", b""))
        return await self.run(request, operation, request_id, client_ip, wire=wire)

    async def run(
        self,
        request: HttpRequest,
        operation: Operation,
        request_id: str,
        client_ip: str,
        admit_viewer: Callable[[Viewer], None] | None = None,
        *,
        wire: WireFormat | None = None,
    ) -> Answer | StreamedAnswer:
        """The pipeline's phases (gateway/pipeline.py) from the document on, with HTTP's
        own: the whole-response cache, GET for queries only, no subscriptions. Answers the
        GraphQL response; raises RequestRefused. `admit_viewer` may refuse the caller
        once it is known and counted, before anything runs (the REST facade's own-id
        paths). With `wire`, an operation that defers or streams a part (or whose slow
        provider a soft deadline defers) answers its payloads as multipart/mixed parts;
        without it, one response with every part merged in."""
        pipeline = self.pipeline
        document = pipeline.document(operation)
        api_key = request.header(b"x-api-key")
        viewer = await pipeline.authenticate(request.header(b"authorization"), api_key, client_ip)
        variables, operation_name = operation.variables, operation.operation_name
        extensions = operation.extensions
        request.note.viewer = "service" if viewer.service else viewer.subject
        request.note.operation = operation_name
        request.note.document = operation.query

        # The hit path: the rate-limit counters and the cached answer in one round trip;
        # on a hit the stored bytes go out with no parse, no validation, no resolver.
        responses = self.responses
        cache_key = None
        report_cache = bool(extensions and extensions.get("cache"))
        if responses is not None and viewer.authenticated:
            cache_key = responses.key(viewer.scope, document.digest, variables, operation_name)
        bypass = b"no-cache" in request.headers.get(b"cache-control", b"")
        data = await pipeline.admit(
            pipeline.windows(viewer, api_key, client_ip), None if bypass else cache_key
        )
        if admit_viewer is not None:  # counted in the incoming limits like any refusal
            admit_viewer(viewer)
        if responses is not None and cache_key is not None:
            if bypass:
                labelled(RESPONSE_CACHE, "bypass").inc()
            elif (cached := responses.parse(data) or responses.landing(cache_key)) is not None:
                labelled(RESPONSE_CACHE, "hit").inc()
                request.note.cache = "hit"
                return _cached(request, cached, report_cache, hit=True)
            else:
                labelled(RESPONSE_CACHE, "miss").inc()

        ready = await pipeline.prepare(document, operation)
        kind = ready.kind
        if request.method == "GET" and kind is not OperationType.QUERY:
            return 405, list(_JSON), error_body("only queries may be sent with GET", "BAD_REQUEST")
        if kind is OperationType.SUBSCRIPTION:
            return (
                400,
                list(_JSON),
                error_body(
                    "subscriptions are served over WebSocket (graphql-transport-ws)", "BAD_REQUEST"
                ),
            )

        context = Context(self.services, viewer, request_id)
        report_cost = bool(extensions and extensions.get("cost"))
        # entity cache fills are held until the answer is out (see DeferredWrites)
        fills = request.fills = DeferredWrites()
        writes_token = deferred_writes.set(fills)
        purges = self.services.cache.purges
        try:
            answer = await self.executor.execute(
                ready.prepared,
                context,
                variables,
                operation_name,
                wire=wire or WireFormat.DEFER_20220824,
                soft_deadlines=self.soft_deadlines if wire is not None else None,
                report_cost=report_cost,
            )
            if isinstance(answer, IncrementalAnswer):
                if wire is not None:
                    first = await answer.first()
                    if answer.has_next:
                        keep = cache_key if kind is OperationType.QUERY else None
                        parts = self._parts(request, answer, first, context, keep, purges)
                        return 200, _multipart_headers(wire), parts
                    result = first  # every part was done with the first: one answer
                else:
                    result = await answer.merge_all()
            else:
                result = answer
        finally:
            deferred_writes.reset(writes_token)
            request.after.extend(fills.tasks)
        body = orjson.dumps(result)
        if kind is OperationType.QUERY and cache_key is not None:
            entry = self._entry(request, cache_key, result, body, context, purges)
            if entry is not None:
                return _cached(request, entry, report_cache, hit=False)
        if report_cache and "extensions" not in result:
            body = with_cache_extension(body, hit=False, age=0.0)
        return 200, list(_JSON), body

    def _entry(
        self,
        request: HttpRequest,
        cache_key: str,
        result: dict[str, Any],
        body: bytes,
        context: Context,
        purges: int,
    ) -> CachedResponse | None:
        """The whole-response cache's entry of an answer, to be written once it is out;
        None when the answer is not kept."""
        if self.responses is None:
            return None
        if "errors" in result or "extensions" in result:
            labelled(RESPONSE_CACHE, "skip").inc()  # partial or stale answers are never kept
            return None
        entry = self.responses.entry(body, context.touched_kinds)
        if entry is None:
            labelled(RESPONSE_CACHE, "skip").inc()
            return None
        # Written right after the answer goes out, unless a purge of this process has
        # since dropped one of its tags (it may hold what the purge removed). A purge the
        # client triggers after reading it (a mutation, a webhook) arrives after that
        # write, or finds it not made.
        request.after.append(self._keep(cache_key, entry, context, purges))
        return entry

    async def _parts(
        self,
        request: HttpRequest,
        answer: IncrementalAnswer,
        first: dict[str, Any],
        context: Context,
        cache_key: str | None,
        purges: int,
    ) -> AsyncGenerator[bytes, None]:
        """The payloads as multipart/mixed parts; once the last is out, the merged answer
        goes to the whole-response cache as any answer would."""
        fills = request.fills

        async def payloads() -> AsyncGenerator[object, None]:
            yield first
            if fills is not None:
                fills.release()  # the first payload is out: the fills of its part may go
            async for payload in answer.rest():
                yield payload

        try:
            async for part in _MULTIPART.stream(payloads, _json_text)():
                yield part.encode()
        finally:
            await answer.aclose()
            if fills is not None:  # the later parts' fills, awaited with the others
                awaited = set(map(id, request.after))
                request.after.extend(t for t in fills.tasks if id(t) not in awaited)
        if cache_key is not None:
            result = answer.merged()
            self._entry(request, cache_key, result, orjson.dumps(result), context, purges)

    async def _keep(self, key: str, entry: CachedResponse, context: Context, purges: int) -> None:
        """Stores an answer after it went out, unless a purge of this process since its
        read began dropped one of its tags."""
        assert self.responses is not None
        cache = self.services.cache
        if cache.purged_since(purges, context.touched_tags):
            labelled(RESPONSE_CACHE, "skip").inc()
            return
        await cache.guarded(self.responses.store(key, entry, context.touched_tags))


async def respond(
    scope: Scope,
    receive: Receive,
    send: Send,
    endpoint: str,
    answer: Callable[[HttpRequest, Receive, str, str], Awaitable[Answer | StreamedAnswer]],
    cors: Cors,
    route: str | None = None,
) -> None:
    """One HTTP exchange of a GraphQL-executing endpoint: request id, log line, trace span,
    metrics (gateway_requests_total{endpoint}), security and CORS headers, and the cache
    fills that finish after the answer went out. `answer` makes the answer."""
    started = time.perf_counter()
    request = HttpRequest(scope)
    request_id = request_id_from(request.header(b"x-request-id"))
    token = request_id_var.set(request_id)
    note_token = request_note_var.set(request.note)
    span = tracing.start_request(request.method, route or request.path, request.headers)
    status = 500
    try:
        client = scope.get("client")
        client_ip = client[0] if client else "unknown"
        status, headers, body = await answer(request, receive, request_id, client_ip)
        headers.append((b"x-request-id", request_id.encode()))
        headers.extend(_SECURITY_HEADERS)
        headers.extend(cors.headers(request.headers.get(b"origin"), request.method))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if isinstance(body, bytes):
            await send({"type": "http.response.body", "body": body})
        else:
            await _send_parts(body, send, receive)
    finally:
        seconds = time.perf_counter() - started
        labelled(REQUESTS, endpoint, str(status)).inc()
        labelled(REQUEST_SECONDS, endpoint).observe(seconds)
        log_request(request.note, status, seconds)
        if span is not None:
            note = request.note
            tracing.end_request(
                span,
                status,
                {"graphql.operation.name": note.operation, "gateway.cache": note.cache},
            )
        if request.fills is not None:
            request.fills.release()
        if request.after:
            # The answer is out; this request's cache fills finish now, in its own task.
            # A next request of the same client is read after they were sent to the
            # cache (they were scheduled before its bytes could arrive), and an ASGI
            # test client sees them done when its call returns.
            await _finish(request.after)
        request_note_var.reset(note_token)
        request_id_var.reset(token)


async def _send_parts(parts: AsyncGenerator[bytes, None], send: Send, receive: Receive) -> None:
    """A streamed answer's parts, each sent as it is made. When the client goes away
    meanwhile, the parts not yet made stop (uvicorn drops what is sent to a closed
    connection without a word, so the request's `receive` is asked)."""
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        while True:
            following = asyncio.ensure_future(anext(parts, None))
            await asyncio.wait({following, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
                return
            part = following.result()
            if part is None:
                await send({"type": "http.response.body", "body": b""})
                return
            await send({"type": "http.response.body", "body": part, "more_body": True})
    finally:
        gone.cancel()
        await parts.aclose()


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has gone away; never, when that cannot be known."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # a body deadline's refusal, say: nothing to say about the client
        await asyncio.Event().wait()


async def _finish(after: list[Awaitable[object]]) -> None:
    for failed in await asyncio.gather(*after, return_exceptions=True):
        if isinstance(failed, Exception):
            log.error("a cache fill failed", exc_info=failed)


def _multipart_headers(wire: WireFormat) -> list[tuple[bytes, bytes]]:
    content_type = f'multipart/mixed; boundary="{_MULTIPART.separator}"; {wire.value}'
    return [
        (b"content-type", content_type.encode()),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),  # nginx passes each part on as it comes
    ]


def _json_text(value: object) -> str:
    return orjson.dumps(value).decode()


def _cached(request: HttpRequest, cached: CachedResponse, report: bool, hit: bool) -> Answer:
    etag = cached.etag.encode()
    headers = [(b"etag", etag), (b"cache-control", b"private, no-cache")]
    if request.method == "GET" and request.headers.get(b"if-none-match") == etag:
        return 304, headers, b""
    body = cached.body
    if report:
        body = with_cache_extension(body, hit, cached.age if hit else 0.0)
    return 200, [*_JSON, *headers], body


async def _read_operation(
    pipeline: OperationPipeline, request: HttpRequest, receive: Receive, max_bytes: int
) -> Operation:
    """The pipeline's decode phase for HTTP: GET parameters or a bounded JSON body."""
    if request.method == "GET":
        params = {k: v[-1] for k, v in parse_qs(request.query_string.decode("latin-1")).items()}
        raw_variables = params.get("variables")
        raw_extensions = params.get("extensions")
        return pipeline.checked(
            params.get("query", ""),
            json_object(loads(raw_variables) if raw_variables else None, "variables"),
            params.get("operationName") or None,
            json_object(loads(raw_extensions) if raw_extensions else None, "extensions"),
        )
    content_type = request.headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if content_type not in _JSON_TYPES:
        # also what keeps plain HTML forms (CSRF) from reaching the executor
        raise RequestRefused(415, "send GraphQL as POST with Content-Type: application/json")
    return pipeline.operation(loads(await read_body(request, receive, max_bytes)))


def loads(data: bytes | str) -> Any:
    """Decoded JSON, or a 400 refusal."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson refuses nesting past 1,024 levels here too
        raise RequestRefused(400, "the body is not valid JSON") from None


async def read_body(request: HttpRequest, receive: Receive, max_bytes: int) -> bytes:
    """The request body, at most `max_bytes` (REQUEST_MAX_BYTES), else a 413 refusal."""
    declared = request.headers.get(b"content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise RequestRefused(413, "the request body is too large")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestRefused(400, "the client went away")
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > max_bytes:
            raise RequestRefused(413, "the request body is too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
