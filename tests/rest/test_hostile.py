"""The REST facade against hostile input: every bound is the pipeline's (REQUEST_MAX_BYTES,
QUERY_MAX_VARIABLE_DEPTH, the cost limit, the resolvers' argument checks, input coercion),
none of the facade's own. Each shape is sent while /healthz is polled: it is refused with a
4xx problem, never a 5xx, and the event loop keeps answering."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayServer
from tests.test_pipeline import _nested, _while_healthz

TICKET = {"subject": "Help", "description": "Please."}
JSON = {"Content-Type": "application/json"}
PAGE = "/api/customers/1001/invoices"

# shape: (method, path, body bytes or None, extra headers, status, code)
SHAPES: dict[str, tuple[str, str, bytes | None, dict[str, str], int, str]] = {
    "first of 10^12": ("GET", f"{PAGE}?first=1000000000000", None, {}, 422, "BAD_USER_INPUT"),
    "first of 2^31 - 1 (cost)": (
        "GET",
        f"{PAGE}?first=2147483647",
        None,
        {},
        400,
        "QUERY_TOO_COMPLEX",
    ),
    "first of 101": ("GET", f"{PAGE}?first=101", None, {}, 422, "BAD_USER_INPUT"),
    "first of -1": ("GET", f"{PAGE}?first=-1", None, {}, 422, "BAD_USER_INPUT"),
    "first not a number": ("GET", f"{PAGE}?first=1e3", None, {}, 422, "BAD_USER_INPUT"),
    "after of 10,000 characters": (
        "GET",
        f"{PAGE}?after={'x' * 10_000}",
        None,
        {},
        422,
        "BAD_USER_INPUT",
    ),
    "status not an enum value": (
        "GET",
        f"{PAGE}?status=__typename",
        None,
        {},
        422,
        "BAD_USER_INPUT",
    ),
    "id of 6,000 characters": ("GET", f"/api/invoices/{'9' * 6000}", None, {}, 404, "NOT_FOUND"),
    "customer id of 6,000 characters": (
        "GET",
        f"/api/customers/{'1' * 6000}/tickets",
        None,
        {},
        404,
        "NOT_FOUND",
    ),
    "id with a NUL": ("GET", "/api/tickets/%00", None, {}, 404, "NOT_FOUND"),
    "id of dots": ("GET", "/api/customers/%2E%2E/documents", None, {}, 404, "NOT_FOUND"),
    "id with an encoded slash": (
        "GET",
        "/api/invoices/in_1%2F..%2F1002",
        None,
        {},
        404,
        "NOT_FOUND",
    ),
    "id of emoji": ("GET", "/api/tickets/%F0%9F%98%80", None, {}, 404, "NOT_FOUND"),
    "id that is a GraphQL document": (
        "GET",
        "/api/invoices/%7B%20me%20%7B%20id%20%7D%20%7D",
        None,
        {},
        404,
        "NOT_FOUND",
    ),
    "body over REQUEST_MAX_BYTES": (
        "POST",
        "/api/tickets",
        json.dumps({**TICKET, "description": "x" * 1_100_000}).encode(),
        JSON,
        413,
        "BAD_REQUEST",
    ),
    "body nested 300 deep": (
        "POST",
        "/api/tickets",
        json.dumps({**TICKET, "priority": _nested(300)}).encode(),
        JSON,
        400,
        "BAD_USER_INPUT",
    ),
    "body nested 5,000 deep (past the JSON parser's limit)": (
        "PUT",
        "/api/customers/1001",
        b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        JSON,
        400,
        "BAD_REQUEST",
    ),
    "body with an unknown field": (
        "POST",
        "/api/tickets",
        json.dumps({**TICKET, "requester": "1002"}).encode(),
        JSON,
        422,
        "BAD_USER_INPUT",
    ),
    "body with 20,000 unknown fields": (
        "PUT",
        "/api/customers/1001",
        json.dumps({f"f{i}": i for i in range(20_000)}).encode(),
        JSON,
        422,
        "BAD_USER_INPUT",
    ),
    "body of the wrong types": (
        "PUT",
        "/api/customers/1001",
        json.dumps({"name": {"first": "Ada"}}).encode(),
        JSON,
        422,
        "BAD_USER_INPUT",
    ),
    "description over the resolver's limit": (
        "POST",
        "/api/tickets",
        json.dumps({**TICKET, "description": "x" * 64_001}).encode(),
        JSON,
        422,
        "BAD_USER_INPUT",
    ),
    "body a list": ("POST", "/api/tickets", b"[1, 2, 3]", JSON, 400, "BAD_REQUEST"),
    "body not JSON": ("POST", "/api/tickets", b"subject=Help", JSON, 400, "BAD_REQUEST"),
    "body empty": ("PUT", "/api/customers/1001", b"", JSON, 400, "BAD_REQUEST"),
    "text/plain": (
        "POST",
        "/api/tickets",
        json.dumps(TICKET).encode(),
        {"Content-Type": "text/plain"},
        415,
        "BAD_REQUEST",
    ),
    "a form": (
        "POST",
        "/api/tickets",
        b"subject=Help&description=Please.",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "BAD_REQUEST",
    ),
    "no content type": (
        "PUT",
        "/api/customers/1001",
        json.dumps({"name": "A"}).encode(),
        {},
        415,
        "BAD_REQUEST",
    ),
}


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_a_hostile_shape_is_refused_over_rest(
    gateway_server: GatewayServer, shape: str
) -> None:
    method, path, body, headers, status, code = SHAPES[shape]
    token = gateway_server.token("1001")

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(base_url=gateway_server.url, timeout=30) as client:
            return await client.request(
                method,
                path,
                content=body,
                headers={**headers, "Authorization": f"Bearer {token}"},
            )

    answer, took, slowest = await _while_healthz(gateway_server.url, send)
    assert answer.status_code == status, answer.text[:300]
    assert answer.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = answer.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert slowest < 1, f"/healthz took {slowest:.2f} x what this machine allows now"
    assert took < 5
    # nothing was written by a refused body
    me = gateway_server.http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["name"] == "Ada Lovelace"


def test_the_variable_depth_bound_is_the_pipelines_setting(
    start: Any,
) -> None:
    gateway: GatewayServer = start(query_max_variable_depth=3)
    auth = {"Authorization": f"Bearer {gateway.token('1001')}"}
    deep = gateway.http.put("/api/customers/1001", json={"name": [["Ada"]]}, headers=auth)
    assert deep.status_code == 400
    assert deep.json()["code"] == "BAD_USER_INPUT"
    assert "3 levels" in deep.json()["detail"]


def test_the_body_bound_is_request_max_bytes(start: Any) -> None:
    gateway: GatewayServer = start(request_max_bytes=2_000)
    auth = {"Authorization": f"Bearer {gateway.token('1001')}"}
    body = {**TICKET, "description": "x" * 2_000}
    too_large = gateway.http.post("/api/tickets", json=body, headers=auth)
    assert too_large.status_code == 413
    assert too_large.json()["code"] == "BAD_REQUEST"
    fits = gateway.http.post(
        "/api/tickets", json={**TICKET, "description": "x" * 1_000}, headers=auth
    )
    assert fits.status_code == 201
