"""@defer and @stream end to end (issue 28): multipart/mixed over HTTP in both wire formats,
graphql-transport-ws, soft deadlines, the caches, limits, errors and stale parts.

A Stripe fake answering in 1.5 s stands for the slow provider; profile and tickets come
from the sandbox at once. Timings are those a client sees (python-multipart reading the
bytes as they arrive, tests/multipart.py).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.schema.incremental import PROVIDER_FIELDS
from gateway.settings import SOFT_DEADLINE_KINDS, Settings
from tests.conftest import GatewayServer
from tests.events.clients import GraphQLSocket
from tests.fakes.stripe import FakeStripe
from tests.multipart import APOLLO_ACCEPT, V02_ACCEPT, post_for_parts
from tests.sources.billing_behaviour import ADA, link_customer

# the Stripe gateway fixtures of the billing suite, shared rather than written again
from tests.sources.test_stripe_billing import (  # noqa: F401
    fake_stripe,
    stripe_gateway,
    stripe_server,
)

STRIPE_SECONDS = 1.5

PAGE = """query Page { me { id name
  tickets(first: 3) { edges { node { id subject } } }
  ... @defer(label: "billing") { invoices(first: 5) { edges { node { id total } } } }
} }"""
PLAIN_PAGE = """query Page { me { id name
  tickets(first: 3) { edges { node { id subject } } }
  invoices(first: 5) { edges { node { id total } } }
} }"""
STREAM = """{ me { id tickets(first: 5) {
  edges @stream(initialCount: 2) { node { id subject } } } } }"""


@pytest.fixture
def stripe(request: pytest.FixtureRequest) -> FakeStripe:
    """The Stripe fake of tests/sources/test_stripe_billing.py, emptied, answering in 1.5 s."""
    fake: FakeStripe = request.getfixturevalue("fake_stripe")
    fake.latency = STRIPE_SECONDS
    return fake


@pytest.fixture
def ada_in_stripe(stripe: FakeStripe) -> str:
    """Ada's Stripe customer, with two open invoices."""
    customer = stripe.add_customer(email="ada@example.com", name="Ada Lovelace")
    for total in (1200, 3400):
        stripe.add_invoice(customer, status="open", total=total)
    return customer


@pytest.fixture
def start_gateway(
    request: pytest.FixtureRequest, ada_in_stripe: str
) -> Callable[..., GatewayServer]:
    """start_gateway(**settings): a gateway whose billing is the slow Stripe fake, Ada
    linked to her Stripe customer, warmed by a first request (token keys, parsers)."""
    gateway_on_stripe: Callable[..., GatewayServer] = request.getfixturevalue("stripe_gateway")

    def start(**overrides: Any) -> GatewayServer:
        server = gateway_on_stripe(**overrides)
        link_customer(server, ADA, ada_in_stripe)
        server.query("{ me { id } }", token=server.token(ADA)).raise_for_status()
        return server

    return start


def _invoice_totals(data: dict[str, Any]) -> list[int]:
    return sorted(edge["node"]["total"] for edge in data["invoices"]["edges"])


def test_the_first_payload_does_not_wait_for_a_slow_stripe(
    start_gateway: Callable[..., GatewayServer],
) -> None:
    server = start_gateway()
    response, parts = post_for_parts(server.http, PAGE, server.token(ADA))
    assert response.status_code == 200
    assert response.headers["content-type"] == 'multipart/mixed; boundary="-"; deferSpec=20220824'
    first, last = parts
    me = first.payload["data"]["me"]
    assert (me["id"], me["name"]) == (ADA, "Ada Lovelace")
    assert len(me["tickets"]["edges"]) == 3
    assert "invoices" not in me
    assert first.payload["hasNext"] is True
    assert first.at < 0.2, f"the first payload took {first.at:.3f} s"
    # Apollo's deferSpec=20220824 shape: the fragment's data at its path, with its label
    assert last.at >= STRIPE_SECONDS
    assert last.payload["hasNext"] is False
    (part,) = last.payload["incremental"]
    assert (part["path"], part["label"]) == (["me"], "billing")
    assert _invoice_totals(part["data"]) == [1200, 3400]
    assert "errors" not in part


def test_a_client_that_goes_away_stops_the_parts_not_sent(
    start_gateway: Callable[..., GatewayServer], capture_logs: Callable[..., io.StringIO]
) -> None:
    server = start_gateway()
    logs = capture_logs("INFO")
    with (
        httpx.Client(base_url=server.url, timeout=5) as client,
        client.stream(
            "POST",
            "/graphql",
            json={"query": PAGE},
            headers={"Authorization": f"Bearer {server.token(ADA)}", "Accept": APOLLO_ACCEPT},
        ) as response,
    ):
        next(response.iter_raw())  # the first bytes, then the page is closed
    time.sleep(0.3)  # the gateway sees the connection go
    # the request ended with the client, not 1.5 s later when Stripe would have answered
    (line,) = [json.loads(line) for line in logs.getvalue().splitlines() if '"graphql Page' in line]
    assert line["duration_ms"] < 1000, line


def test_a_failing_stripe_fails_only_the_deferred_part(
    start_gateway: Callable[..., GatewayServer], stripe: FakeStripe
) -> None:
    server = start_gateway()
    stripe.latency = 0.0
    stripe.fail_all(500)
    _response, (first, last) = post_for_parts(server.http, PAGE, server.token(ADA))
    assert "errors" not in first.payload
    assert len(first.payload["data"]["me"]["tickets"]["edges"]) == 3
    (part,) = last.payload["incremental"]
    assert part["data"] == {"invoices": None}
    (error,) = part["errors"]
    assert error["path"] == ["me", "invoices"]
    assert error["extensions"]["code"] == "INTEGRATION_UNAVAILABLE"
    assert error["extensions"]["source"] == "stripe"
    assert error["extensions"]["retryable"] is True


def test_a_soft_deadline_defers_a_slow_provider_only_for_clients_that_accept_parts(
    start_gateway: Callable[..., GatewayServer],
) -> None:
    server = start_gateway(provider_soft_deadlines="billing=100")
    _response, (first, last) = post_for_parts(server.http, PLAIN_PAGE, server.token(ADA))
    assert 0.1 <= first.at < 0.3, f"the first payload took {first.at:.3f} s"
    assert "invoices" not in first.payload["data"]["me"]
    assert len(first.payload["data"]["me"]["tickets"]["edges"]) == 3
    (part,) = last.payload["incremental"]
    assert part["path"] == ["me"]
    assert "label" not in part  # the gateway's own deferral has no label to show
    assert _invoice_totals(part["data"]) == [1200, 3400]

    # a client that asked for no parts gets the page as today, once Stripe has answered
    started = time.monotonic()
    response = server.http.post(
        "/graphql",
        json={"query": PLAIN_PAGE},
        headers={"Authorization": f"Bearer {server.token(ADA)}", "Cache-Control": "no-cache"},
    )
    assert response.headers["content-type"] == "application/json"
    assert _invoice_totals(response.json()["data"]["me"]) == [1200, 3400]
    assert time.monotonic() - started < 1.0  # the entity cache had the invoices by now


def test_a_provider_within_its_soft_deadline_keeps_the_page_whole(
    start_gateway: Callable[..., GatewayServer], stripe: FakeStripe
) -> None:
    stripe.latency = 0.05
    server = start_gateway(provider_soft_deadlines="billing=1000")
    response, parts = post_for_parts(server.http, PLAIN_PAGE, server.token(ADA))
    assert parts == []  # one answer, as application/json
    assert _invoice_totals(response.json()["data"]["me"]) == [1200, 3400]


def test_entity_cache_hits_come_in_the_first_payload_and_pages_from_the_response_cache(
    start_gateway: Callable[..., GatewayServer],
) -> None:
    server = start_gateway()
    token = server.token(ADA)
    _response, parts = post_for_parts(server.http, PAGE, token)
    assert len(parts) == 2

    # the whole-response cache kept the merged page: served whole, in one payload
    started = time.monotonic()
    response, parts = post_for_parts(server.http, PAGE, token)
    assert parts == []
    assert response.headers["content-type"] == "application/json"
    assert "etag" in response.headers
    me = response.json()["data"]["me"]
    assert _invoice_totals(me) == [1200, 3400]
    assert len(me["tickets"]["edges"]) == 3
    assert time.monotonic() - started < 0.5

    # past the response cache, the invoices are entity-cache hits: done with the first part
    started = time.monotonic()
    response = server.http.post(
        "/graphql",
        json={"query": PAGE},
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": APOLLO_ACCEPT,
            "Cache-Control": "no-cache",
        },
    )
    assert response.headers["content-type"] == "application/json"
    assert _invoice_totals(response.json()["data"]["me"]) == [1200, 3400]
    assert time.monotonic() - started < 0.5


def test_a_deferred_part_served_stale_says_so_in_its_own_extensions(
    start_gateway: Callable[..., GatewayServer], stripe: FakeStripe
) -> None:
    stripe.latency = 0.0
    server = start_gateway(cache_ttl_billing=1, response_cache="off")
    token = server.token(ADA)
    post_for_parts(server.http, PAGE, token)  # fills the entity cache and its stale copy
    time.sleep(1.1)  # the fresh entry expires; the stale copy stays
    stripe.latency = 0.1  # each failing attempt takes a while: the part comes later
    stripe.fail_all(500)
    _response, (first, last) = post_for_parts(server.http, PAGE, token)
    assert "extensions" not in first.payload  # the initial part is fresh
    (part,) = last.payload["incremental"]
    assert _invoice_totals(part["data"]) == [1200, 3400]
    assert "errors" not in part
    (note,) = part["extensions"]["stale"]
    assert (note["path"], note["source"]) == (["me", "invoices"], "stripe")
    assert note["age"] >= 1


def test_without_multipart_a_deferred_page_comes_whole(gateway_server: GatewayServer) -> None:
    token = gateway_server.token("1001")
    deferred = gateway_server.query(PAGE, token=token)
    assert deferred.headers["content-type"] == "application/json"
    plain = gateway_server.query(PLAIN_PAGE, token=token).json()
    assert deferred.json() == plain
    assert len(plain["data"]["me"]["invoices"]["edges"]) == 5


def test_a_streamed_list_comes_in_its_initial_count_then_the_rest(
    gateway_server: GatewayServer,
) -> None:
    token = gateway_server.token("1001")
    _response, (first, last) = post_for_parts(gateway_server.http, STREAM, token)
    edges = first.payload["data"]["me"]["tickets"]["edges"]
    assert len(edges) == 2
    (part,) = last.payload["incremental"]
    assert part["path"] == ["me", "tickets", "edges", 2]
    assert len(part["items"]) == 3
    streamed = [e["node"]["id"] for e in edges + part["items"]]
    whole = gateway_server.query(STREAM, token=token).json()["data"]["me"]["tickets"]["edges"]
    assert streamed == [e["node"]["id"] for e in whole]


def test_incremental_spec_v02_is_graphql_cores_own_format(gateway_server: GatewayServer) -> None:
    token = gateway_server.token("1001")
    response, (first, last) = post_for_parts(gateway_server.http, STREAM, token, V02_ACCEPT)
    assert response.headers["content-type"].endswith("incrementalSpec=v0.2")
    assert first.payload["pending"] == [{"id": "0", "path": ["me", "tickets", "edges"]}]
    assert last.payload["incremental"][0]["id"] == "0"
    assert len(last.payload["incremental"][0]["items"]) == 3
    assert last.payload["completed"] == [{"id": "0"}]
    assert last.payload["hasNext"] is False


OVER_COST = {
    "defer": "{ me { id ... @defer { invoices(first: 20) { edges { node { id } } } } } }",
    "stream": "{ me { tickets(first: 20) { edges @stream(initialCount: 1) { node { id } } } } }",
}


@pytest.mark.parametrize("shape", list(OVER_COST))
async def test_deferred_and_streamed_parts_count_in_the_cost(
    start: Callable[..., GatewayServer], shape: str
) -> None:
    server = start(query_max_cost=30)
    query = OVER_COST[shape]
    token = server.token("1001")
    response = server.http.post(
        "/graphql",
        json={"query": query},
        headers={"Authorization": f"Bearer {token}", "Accept": APOLLO_ACCEPT},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    async with GraphQLSocket.open(server.url, token) as socket:
        await socket.send({"type": "subscribe", "id": "c", "payload": {"query": query}})
        message = await socket.receive(within=10)
    assert message["type"] == "error", message
    assert message["payload"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"


def test_soft_deadlines_name_provider_kinds(make_settings: Callable[..., Settings]) -> None:
    assert set(PROVIDER_FIELDS.values()) == set(SOFT_DEADLINE_KINDS)
    settings = make_settings(provider_soft_deadlines="billing=300, files=50")
    assert settings.soft_deadlines() == {"billing": 0.3, "files": 0.05}
    for bad, says in (("crm=100", "not a provider kind"), ("billing", "kind=milliseconds")):
        with pytest.raises(ValueError, match=says):
            make_settings(provider_soft_deadlines=bad)


async def test_over_websocket_a_deferred_query_is_a_next_per_payload(
    gateway_server: GatewayServer,
) -> None:
    async with GraphQLSocket.open(gateway_server.url, gateway_server.token("1001")) as socket:
        await socket.send({"type": "subscribe", "id": "s", "payload": {"query": STREAM}})
        first = await socket.next_payload("s")
        assert len(first["data"]["me"]["tickets"]["edges"]) == 2
        assert first["hasNext"] is True
        last = await socket.next_payload("s")
        assert last["incremental"][0]["path"] == ["me", "tickets", "edges", 2]
        assert last["hasNext"] is False
        assert await socket.receive() == {"type": "complete", "id": "s"}


async def test_over_websocket_complete_stops_the_parts_not_sent(
    start_gateway: Callable[..., GatewayServer], stripe: FakeStripe
) -> None:
    stripe.latency = 0.5
    server = start_gateway()
    async with GraphQLSocket.open(server.url, server.token(ADA)) as socket:
        await socket.send({"type": "subscribe", "id": "p", "payload": {"query": PAGE}})
        first = await socket.next_payload("p")
        assert first["hasNext"] is True
        await socket.send({"type": "complete", "id": "p"})
        await socket.assert_silent(0.8)  # the invoices' part, due by now, never comes
        # and the connection serves the next operation
        await socket.send({"type": "subscribe", "id": "q", "payload": {"query": "{ me { id } }"}})
        assert (await socket.next_payload("q"))["data"] == {"me": {"id": ADA}}


async def test_a_subscription_cannot_defer(gateway_server: GatewayServer) -> None:
    query = "subscription { invoiceUpdated { id ... @defer { total } } }"
    async with GraphQLSocket.open(gateway_server.url, gateway_server.token("1001")) as socket:
        await socket.send({"type": "subscribe", "id": "d", "payload": {"query": query}})
        message = await socket.receive()
        assert message["type"] == "error"
        (error,) = message["payload"]
        assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert "subscription" in error["message"]
