"""RFC 9457 problem details for the REST facade: the GraphQL error codes of docs/design.md §7
with the HTTP status a REST client expects."""

from __future__ import annotations

import math
from typing import Any

import orjson

__all__ = ["PROBLEM_TYPE", "TITLES", "Problem", "problem", "status_of"]

PROBLEM_TYPE = "application/problem+json"
_TYPE_BASE = "urn:portal-gateway:problem:"

# code -> (status, title); INTEGRATION_UNAVAILABLE depends on the error (status_of)
TITLES: dict[str, tuple[int, str]] = {
    "BAD_REQUEST": (400, "Bad request"),
    "GRAPHQL_PARSE_FAILED": (400, "Bad request"),
    "GRAPHQL_VALIDATION_FAILED": (400, "Bad request"),
    "QUERY_TOO_COMPLEX": (400, "Request too complex"),
    "PERSISTED_QUERY_NOT_ALLOWED": (400, "Document not allowed"),
    "PERSISTED_QUERY_NOT_FOUND": (400, "Document not found"),
    "PERSISTED_QUERY_NOT_SUPPORTED": (400, "Persisted documents not supported"),
    "UNAUTHENTICATED": (401, "Authentication required"),
    "FORBIDDEN": (403, "Forbidden"),
    "NOT_FOUND": (404, "Not found"),
    "CONFLICT": (409, "Conflict"),
    "BAD_USER_INPUT": (422, "Invalid input"),
    "RATE_LIMITED": (429, "Too many requests"),
    "INTERNAL_SERVER_ERROR": (500, "Internal server error"),
    "INTEGRATION_UNAVAILABLE": (503, "A provider is unavailable"),
}

Problem = tuple[int, list[tuple[bytes, bytes]], bytes]


def status_of(extensions: dict[str, Any]) -> int:
    """The HTTP status of a GraphQL error that left nothing to answer: a provider that is
    down or timed out (retryable) is 503, one that answered something unusable 502."""
    code = str(extensions.get("code", "INTERNAL_SERVER_ERROR"))
    if code == "INTEGRATION_UNAVAILABLE" and extensions.get("retryable") is False:
        return 502
    return TITLES.get(code, (500, ""))[0]


def problem(
    status: int,
    error: dict[str, Any],
    *,
    retry_after: float | None = None,
    extra: dict[str, Any] | None = None,
) -> Problem:
    """The problem document for one GraphQL error (`message`, `extensions`): its code and
    extension members beside RFC 9457's type, title, status and detail."""
    extensions = dict(error.get("extensions") or {})
    code = str(extensions.pop("code", "INTERNAL_SERVER_ERROR"))
    title = TITLES.get(code, (status, "Error"))[1]
    if code == "INTEGRATION_UNAVAILABLE" and status == 502:
        title = "A provider answered in error"
    body: dict[str, Any] = {
        "type": _TYPE_BASE + code.lower().replace("_", "-"),
        "title": title,
        "status": status,
        "detail": str(error.get("message") or title),
        "code": code,
        **extensions,
        **(extra or {}),
    }
    headers = [(b"content-type", PROBLEM_TYPE.encode())]
    if retry_after is None and status in (429, 503):
        given = extensions.get("retryAfter")
        retry_after = given if isinstance(given, int | float) else None
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="portal-gateway"'))
    return status, headers, orjson.dumps(body)
