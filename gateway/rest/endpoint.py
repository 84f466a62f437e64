"""The REST facade at /api: each endpoint runs its GraphQL operation (gateway/rest/operations.py)
through the /graphql endpoint's own pipeline, and answers the resource or a problem document.

Raw ASGI like /graphql, sharing its exchange (gateway.graphql_http.respond): request id, log
line, span, metrics, security and CORS headers. What is REST's own is the decoding of paths,
query strings and bodies into variables and the shaping of the answer: items and a Link
header for pages, ETags, problem details, `_missing` and `_stale` for partial answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import orjson

from gateway.auth import Viewer
from gateway.cors import Cors
from gateway.errors import RequestRefused
from gateway.graphql_http import (
    Answer,
    GraphQLEndpoint,
    HttpRequest,
    Receive,
    Scope,
    Send,
    loads,
    read_body,
    respond,
)
from gateway.pipeline import json_object
from gateway.rest.operations import RestOperation, Route, match
from gateway.rest.problems import problem, status_of

__all__ = ["RestEndpoint"]

_JSON = (b"content-type", b"application/json")
_HTML_CSP = (
    b"content-security-policy",
    # the reference page's assets are the gateway's own; nothing else may load
    b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
)
_JSON_TYPES = (b"application/json",)
_INT32 = 2**31 - 1


class RestEndpoint:
    def __init__(
        self,
        graphql: GraphQLEndpoint,
        openapi: bytes,
        docs_page: bytes | None,
        cors_origins: list[str],
        *,
        max_body_bytes: int,
    ) -> None:
        self.graphql = graphql
        self.pipeline = graphql.pipeline
        self.openapi = openapi
        self.docs_page = docs_page
        self.cors = Cors(cors_origins, b"GET, POST, PUT, DELETE, OPTIONS")
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(scope, receive, send, "rest", self._answer, self.cors, route="/api")

    async def _answer(
        self, request: HttpRequest, receive: Receive, request_id: str, client_ip: str
    ) -> Answer:
        path = request.path
        if path == "/api/openapi.json" and request.method == "GET":
            return 200, [_JSON, (b"cache-control", b"no-cache")], self.openapi
        if path == "/api/docs" and request.method == "GET" and self.docs_page is not None:
            return 200, [(b"content-type", b"text/html; charset=utf-8"), _HTML_CSP], self.docs_page
        route = match(path)
        if route is None:
            return _refusal(404, "no such endpoint", "NOT_FOUND")
        if request.method == "OPTIONS":
            return 204, [], b""
        operation = route.operations.get(request.method)
        if operation is None:
            allow = ", ".join([*sorted(route.operations), "OPTIONS"]).encode()
            status, headers, body = _refusal(405, f"use {allow.decode()}", "BAD_REQUEST")
            return status, [*headers, (b"allow", allow)], body
        request.note.operation = operation.name
        try:
            return await self._run(operation, route, request, receive, request_id, client_ip)
        except RequestRefused as refused:
            return problem(refused.status, refused.errors[0], retry_after=refused.retry_after)

    async def _run(
        self,
        operation: RestOperation,
        route: Route,
        request: HttpRequest,
        receive: Receive,
        request_id: str,
        client_ip: str,
    ) -> Answer:
        variables = await self._variables(operation, route, request, receive)
        # the ETag a GET answers is REST's own (of the body below), not the response cache's
        if_none_match = request.headers.pop(b"if-none-match", None)
        checked = self.pipeline.checked(operation.document, variables, operation.name, None)
        status, _headers, body = await self.graphql.run(
            request, checked, request_id, client_ip, _own_id(route.id) if operation.own_id else None
        )
        assert isinstance(body, bytes)  # no `wire`: one answer, never parts
        result = orjson.loads(body)
        if status != 200:  # the executor's transport rules; not reached by these documents
            return problem(status, (result.get("errors") or [{}])[0])
        return _shaped(operation, route, request, result, if_none_match)

    async def _variables(
        self, operation: RestOperation, route: Route, request: HttpRequest, receive: Receive
    ) -> dict[str, Any]:
        """The document's variables from the path's id, the query string and the body."""
        variables: dict[str, Any] = {}
        if route.id is not None:
            variables["id"] = route.id
        params = {k: v[-1] for k, v in parse_qs(request.query_string.decode("latin-1")).items()}
        if operation.page:
            if "first" in params:
                variables["first"] = _integer(params["first"], "first")
            if "after" in params:
                variables["after"] = params["after"]
        for name in operation.filters:
            if name in params:
                variables[name] = params[name]
        if operation.body is not None:
            content_type = request.headers.get(b"content-type", b"").split(b";")[0].strip()
            if content_type.lower() not in _JSON_TYPES:
                raise RequestRefused(415, "send the body as JSON (Content-Type: application/json)")
            raw = await read_body(request, receive, self.max_body_bytes)
            body = json_object(loads(raw), "the body") if raw else None
            if body is None:
                raise RequestRefused(400, "the body must be a JSON object")
            key = request.header(b"idempotency-key")
            field = operation.idempotency_field
            if field is not None and key is not None:
                if body.get(field) not in (None, key):
                    raise RequestRefused(
                        422,
                        f"the Idempotency-Key header and the body's {field} differ",
                        "BAD_USER_INPUT",
                        field=field,
                    )
                body = {**body, field: key}
            variables[operation.body] = body
        return variables


def _own_id(path_id: str | None) -> Callable[[Viewer], None]:
    """A customer may name only itself in the path: NOT_FOUND for another id, before anything
    runs (updateProfile changes the signed-in customer; another's id must change nothing)."""

    def admit(viewer: Viewer) -> None:
        if viewer.customer_id is not None and viewer.customer_id != path_id:
            raise RequestRefused(404, "not found", "NOT_FOUND")

    return admit


def _integer(value: str, name: str) -> int:
    text = value.strip()
    if not text.lstrip("-").isdigit() or len(text) > 11 or abs(int(text)) > _INT32:
        raise RequestRefused(422, f"{name} must be a 32-bit integer", "BAD_USER_INPUT", field=name)
    return int(text)


def _refusal(status: int, message: str, code: str) -> Answer:
    return problem(status, {"message": message, "extensions": {"code": code}})


def _shaped(
    operation: RestOperation,
    route: Route,
    request: HttpRequest,
    result: dict[str, Any],
    if_none_match: bytes | None,
) -> Answer:
    """The GraphQL answer as REST's: the resource, or the problem that left none."""
    errors: list[dict[str, Any]] = result.get("errors") or []
    resource: Any = result.get("data")
    for key in operation.result:
        resource = resource.get(key) if isinstance(resource, dict) else None
    if resource is None:
        return _nothing(operation, errors)
    prefix = list(operation.result)
    body: dict[str, Any]
    if operation.page:
        body = {
            "items": [edge["node"] for edge in resource["edges"]],
            "totalCount": resource["totalCount"],
            "pageInfo": resource["pageInfo"],
        }
    else:
        body = dict(resource)
    missing = [
        {"path": _pointer(error["path"][len(prefix) :], operation.page), **_summary(error)}
        for error in errors
        if _under(error.get("path"), prefix)
    ]
    if missing:
        body["_missing"] = missing
    stale = (result.get("extensions") or {}).get("stale") or []
    if stale:
        body["_stale"] = [
            {**note, "path": _pointer(note["path"][len(prefix) :], operation.page)}
            for note in stale
            if _under(note.get("path"), prefix, strict=False)
        ]
    headers = [_JSON]
    if operation.success == 204:
        return 204, [], b""
    if operation.location is not None:
        location = operation.location.replace("{id}", quote(str(body["id"]), safe=""))
        headers.append((b"location", location.encode()))
    if operation.page:
        info = body["pageInfo"]
        if info.get("hasNextPage") and info.get("endCursor"):
            headers.append((b"link", _next_link(request, info["endCursor"])))
    data = orjson.dumps(body)
    if operation.method == "GET":
        etag = b'"' + hashlib.sha256(data).hexdigest()[:32].encode() + b'"'
        headers += [
            (b"etag", etag),
            (b"cache-control", b"private, no-cache"),
            (b"vary", b"Authorization, X-API-Key"),
        ]
        if if_none_match is not None and _matches(if_none_match, etag):
            return 304, headers[1:], b""
    return operation.success, headers, data


def _nothing(operation: RestOperation, errors: list[dict[str, Any]]) -> Answer:
    """The problem for an answer without its resource: the error on the resource's path (or
    above it), else the first; no error at all is a resource that does not exist."""
    prefix = list(operation.result)
    on_path = [
        e for e in errors if e.get("path") is None or _under(prefix, e["path"], strict=False)
    ]
    chosen = (
        max(on_path, key=lambda e: len(e.get("path") or []))
        if on_path
        else (errors[0] if errors else None)
    )
    if chosen is None:
        return _refusal(404, "not found", "NOT_FOUND")
    extensions = chosen.get("extensions") or {}
    status = status_of(extensions)
    return problem(status, {"message": chosen.get("message"), "extensions": extensions})


def _under(path: Any, prefix: list[Any], *, strict: bool = True) -> bool:
    """Whether `path` lies inside `prefix` (strictly below it, unless `strict` is off)."""
    if not isinstance(path, list) or len(path) < len(prefix) + (1 if strict else 0):
        return False
    return path[: len(prefix)] == prefix


def _pointer(path: list[Any], page: bool) -> str:
    """A GraphQL path below the resource as a JSON Pointer (RFC 6901) into the REST body."""
    parts = [str(p) for p in path]
    if page and parts[:1] == ["edges"]:
        # edges/3/node/... is items/3/...
        parts = ["items", *parts[1:2], *parts[3:]]
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _summary(error: dict[str, Any]) -> dict[str, Any]:
    extensions = dict(error.get("extensions") or {})
    return {
        "code": extensions.pop("code", "INTERNAL_SERVER_ERROR"),
        "detail": error.get("message"),
        **extensions,
    }


def _next_link(request: HttpRequest, cursor: str) -> bytes:
    """RFC 8288: the next page, the same query with `after` moved on."""
    params = {k: v[-1] for k, v in parse_qs(request.query_string.decode("latin-1")).items()}
    params["after"] = cursor
    return f'<{quote(request.path)}?{urlencode(params)}>; rel="next"'.encode()


def _matches(if_none_match: bytes, etag: bytes) -> bool:
    """If-None-Match (RFC 9110 13.1.2): `*`, or any listed tag, compared weakly."""
    given = if_none_match.strip()
    if given == b"*":
        return True
    return any(tag.strip().removeprefix(b"W/") == etag for tag in given.split(b","))
