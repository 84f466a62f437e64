"""What a REST client sees when things go wrong: a provider down (the documented status and
body), partial answers that say what is missing, and each error code's HTTP status; and that
the facade runs on /graphql's pipeline (its limits, policies and metrics)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from prometheus_client import REGISTRY

from tests.conftest import GatewayServer
from tests.rest.conftest import World
from tests.rest.test_endpoints import problem

TICKET = {"subject": "Help", "description": "Please."}


@pytest.fixture
def providers(world: World) -> World:
    if world.stripe is None:
        pytest.skip("the sandbox has no provider to take down")
    return world


@pytest.mark.parametrize("world", ["providers"], indirect=True)
def test_billing_down_answers_503_for_invoices_and_a_partial_customer(providers: World) -> None:
    world = providers
    assert world.stripe is not None
    world.stripe.fail_all(503)
    own = world.own
    invoices = world.http.get(f"/api/customers/{own.id}/invoices", headers=own.auth)
    body = problem(invoices, 503, "INTEGRATION_UNAVAILABLE")
    assert body["source"] == "stripe"
    assert body["retryable"] is True
    assert body["title"] == "A provider is unavailable"
    # the customer itself is answered (CRM is up), and says which part is missing
    customer = world.http.get(f"/api/customers/{own.id}", headers=own.auth)
    assert customer.status_code == 200
    answer = customer.json()
    assert answer["name"] == "Grace Tester"
    assert answer["subscriptions"] is None
    [missing] = answer["_missing"]
    assert missing["path"] == "/subscriptions"
    assert missing["code"] == "INTEGRATION_UNAVAILABLE"
    assert missing["source"] == "stripe"
    # the help desk is unaffected
    tickets = world.http.get(f"/api/customers/{own.id}/tickets", headers=own.auth)
    assert tickets.status_code == 200
    world.stripe.recover()


@pytest.mark.parametrize("world", ["providers"], indirect=True)
def test_crm_down_answers_stale_data_then_503_once_there_is_none(
    providers: World, redis_url: str, cache_prefix: str
) -> None:
    world = providers
    assert world.hubspot is not None
    path = f"/api/customers/{world.own.id}"
    cache = redis.Redis.from_url(redis_url)
    try:
        fresh = [k for k in cache.scan_iter(match=f"{cache_prefix}*") if not k.endswith(b":stale")]
        cache.delete(*fresh)  # as if the CRM's TTL ran out
        world.hubspot.fail(None, 503, times=None)
        stale = world.http.get(path, headers=world.own.auth)
        assert stale.status_code == 200
        assert stale.json()["name"] == "Grace Tester"
        [note] = stale.json()["_stale"]
        assert note["path"] == ""  # the whole resource
        assert note["source"] == "hubspot"
        cache.delete(*cache.scan_iter(match=f"{cache_prefix}*"))  # and no copy either
        response = world.http.get(path, headers=world.own.auth)
    finally:
        cache.close()
        world.hubspot.clear_faults()
    body = problem(response, 503, "INTEGRATION_UNAVAILABLE")
    assert body["source"] == "hubspot"
    assert body["retryable"] is True
    assert "Grace" not in response.text


@pytest.mark.parametrize("world", ["providers"], indirect=True)
def test_a_provider_refusing_the_gateway_is_502(providers: World) -> None:
    world = providers
    assert world.stripe is not None
    world.stripe.fail_all(401)
    response = world.http.get(f"/api/customers/{world.own.id}/invoices", headers=world.own.auth)
    world.stripe.recover()
    body = problem(response, 502, "INTEGRATION_UNAVAILABLE")
    assert body["retryable"] is False
    assert body["source"] == "stripe"
    assert body["title"] == "A provider answered in error"


def test_error_codes_and_their_statuses(world: World) -> None:
    http, own = world.http, world.own
    anonymous = http.get("/api/me")
    problem(anonymous, 401, "UNAUTHENTICATED")
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    bad_token = http.get("/api/me", headers={"Authorization": "Bearer not-a-token"})
    problem(bad_token, 401, "UNAUTHENTICATED")
    # creating a ticket acts as a customer: staff are forbidden
    problem(http.post("/api/tickets", json=TICKET, headers=world.staff()), 403, "FORBIDDEN")
    # the resolvers' own input rules
    empty = http.post("/api/tickets", json={**TICKET, "subject": " "}, headers=own.auth)
    assert problem(empty, 422, "BAD_USER_INPUT")["field"] == "subject"
    phone = http.put(f"/api/customers/{own.id}", json={"phone": "call me"}, headers=own.auth)
    assert problem(phone, 422, "BAD_USER_INPUT")["field"] == "phone"
    # the transport's: methods, routes, content types
    wrong = http.patch(f"/api/customers/{own.id}", json={}, headers=own.auth)
    problem(wrong, 405, "BAD_REQUEST")
    assert wrong.headers["allow"] == "GET, PUT, OPTIONS"
    problem(http.get("/api/nothing/here", headers=own.auth), 404, "NOT_FOUND")
    # staff are no customer: /api/me has nothing to show them
    problem(http.get("/api/me", headers=world.staff()), 404, "NOT_FOUND")


def test_idempotency_key_and_body_must_agree(world: World) -> None:
    response = world.http.post(
        "/api/tickets",
        json={**TICKET, "clientMutationId": "a"},
        headers={**world.own.auth, "Idempotency-Key": "b"},
    )
    assert problem(response, 422, "BAD_USER_INPUT")["field"] == "clientMutationId"
    too_long = world.http.post(
        "/api/tickets", json=TICKET, headers={**world.own.auth, "Idempotency-Key": "k" * 201}
    )
    assert problem(too_long, 422, "BAD_USER_INPUT")["field"] == "clientMutationId"


def test_incoming_rate_limit_answers_429_with_retry_after(
    start: Callable[..., GatewayServer],
) -> None:
    gateway = start(rate_limit_viewer="3/60s")
    auth = {"Authorization": f"Bearer {gateway.token('1001')}"}
    statuses = [gateway.http.get("/api/me", headers=auth).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = gateway.http.get("/api/customers/1001/tickets", headers=auth)
    body = problem(limited, 429, "RATE_LIMITED")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert body["retryAfter"] > 0
    # one budget for both transports: /graphql is spent too
    assert gateway.query("{ me { id } }", token=gateway.token("1001")).status_code == 429


def test_the_pipelines_cost_limit_applies(start: Callable[..., GatewayServer]) -> None:
    gateway = start(query_max_cost=100)
    auth = {"Authorization": f"Bearer {gateway.token('1001')}"}
    small = gateway.http.get("/api/customers/1001/invoices?first=3", headers=auth)
    assert small.status_code == 200
    large = gateway.http.get("/api/customers/1001/invoices?first=50", headers=auth)
    body = problem(large, 400, "QUERY_TOO_COMPLEX")
    assert body["limit"] == 100
    assert body["actual"] > 100


def test_trusted_documents_only_still_serves_the_facade(
    start: Callable[..., GatewayServer],
) -> None:
    gateway = start(persisted_queries="only")
    token = gateway.token("1001")
    refused = gateway.query("{ me { id } }", token=token)
    assert refused.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_ALLOWED"
    me = gateway.http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["id"] == "1001"


def _requests(endpoint: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "gateway_requests_total", {"endpoint": endpoint, "status": status}
    )
    return value or 0.0


def _counted(endpoint: str, status: str, at_least: float) -> float:
    """The counter once it reached `at_least` (it is counted just after the answer went
    out), or as it stands after a second."""
    deadline = time.monotonic() + 1.0
    while (value := _requests(endpoint, status)) < at_least and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def test_requests_are_counted_and_carry_the_request_id(
    gateway_server: GatewayServer,
) -> None:
    auth = {"Authorization": f"Bearer {gateway_server.token('1001')}"}
    ok, missing = _requests("rest", "200"), _requests("rest", "404")
    gateway_server.http.get("/api/me", headers=auth)
    gateway_server.http.get("/api/invoices/in_nope", headers=auth)
    assert _counted("rest", "200", ok + 1) == ok + 1
    assert _counted("rest", "404", missing + 1) == missing + 1
    response = gateway_server.http.get("/api/me", headers={**auth, "X-Request-Id": "rest-req-1"})
    assert response.headers["x-request-id"] == "rest-req-1"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_cors_preflight_names_the_facades_methods(start: Callable[..., GatewayServer]) -> None:
    gateway = start(cors_origins=["https://portal.example.com"])
    preflight = gateway.http.options(
        "/api/customers/1001",
        headers={"Origin": "https://portal.example.com", "Access-Control-Request-Method": "PUT"},
    )
    assert preflight.status_code == 204
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    assert "idempotency-key" in preflight.headers["access-control-allow-headers"]
    elsewhere = gateway.http.options(
        "/api/customers/1001", headers={"Origin": "https://evil.example.com"}
    )
    assert "access-control-allow-origin" not in elsewhere.headers


@pytest.mark.parametrize("world", ["providers"], indirect=True)
def test_a_repeated_get_is_answered_from_the_caches(providers: World) -> None:
    world = providers
    assert world.hubspot is not None
    assert world.stripe is not None
    path = f"/api/customers/{world.own.id}/invoices?first=3"
    first = world.http.get(path, headers=world.own.auth)
    assert first.status_code == 200
    crm, billing = world.hubspot.count(), len(world.stripe.calls)
    second = world.http.get(path, headers=world.own.auth)
    assert second.json() == first.json()
    assert second.headers["etag"] == first.headers["etag"]
    # no provider call: the response or entity cache /graphql reads answered it
    assert (world.hubspot.count(), len(world.stripe.calls)) == (crm, billing)


def test_a_service_key_reads_any_customer(world: World) -> None:
    service = {"X-API-Key": "test-service-key"}
    response = world.http.get(f"/api/customers/{world.other.id}", headers=service)
    assert response.status_code == 200
    assert response.json()["id"] == world.other.id
    wrong = world.http.get(f"/api/customers/{world.other.id}", headers={"X-API-Key": "guess"})
    problem(wrong, 401, "UNAUTHENTICATED")


def test_probing_another_id_counts_against_the_limit(
    start: Callable[..., GatewayServer],
) -> None:
    gateway = start(rate_limit_viewer="2/60s")
    auth = {"Authorization": f"Bearer {gateway.token('1001')}"}
    for _ in range(2):
        probe = gateway.http.put("/api/customers/1002", json={"name": "M"}, headers=auth)
        problem(probe, 404, "NOT_FOUND")
    limited = gateway.http.put("/api/customers/1002", json={"name": "M"}, headers=auth)
    problem(limited, 429, "RATE_LIMITED")
