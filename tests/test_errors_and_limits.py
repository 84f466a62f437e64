"""A failing source costs only its own fields; bad input gets a clear error; the server stays up."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway
from tests.events.clients import wait_for

HOME = "{ me { name invoices { totalCount } tickets { totalCount } files { totalCount } } }"


@pytest.fixture
def billing_down(make_settings: Callable[..., Settings]) -> Iterator[GatewayServer]:
    settings = make_settings(sandbox_fail=["billing"])
    with running_gateway(settings) as running:
        yield running


def test_failing_billing_nulls_only_invoices(billing_down: GatewayServer) -> None:
    body = billing_down.query(HOME, token=billing_down.token()).json()
    me = body["data"]["me"]
    assert me["name"] == "Ada Lovelace"
    assert me["invoices"] is None
    assert me["tickets"]["totalCount"] == 12
    assert me["files"]["totalCount"] == 10
    [error] = body["errors"]
    assert error["path"] == ["me", "invoices"]
    assert error["extensions"]["code"] == "INTEGRATION_UNAVAILABLE"
    assert error["extensions"]["source"] == "sandbox-billing"
    assert error["extensions"]["retryable"] is True


def test_provider_recovering_serves_fresh_data(billing_down: GatewayServer) -> None:
    billing_down.sources.billing.fail = False
    body = billing_down.query(HOME, token=billing_down.token()).json()
    assert "errors" not in body
    assert body["data"]["me"]["invoices"]["totalCount"] == 12


def test_stale_copy_served_when_the_provider_fails(gateway_server: GatewayServer) -> None:
    token = gateway_server.token()
    assert "errors" not in gateway_server.query(HOME, token=token).json()
    # the fresh entries (and the whole-response entry) expire; the provider then fails
    cache = gateway_server.gateway.services.cache

    def filled() -> bool:  # the fills are written just after the answer goes out
        keys = _fresh_billing_keys(cache)
        written = any(":resp:" in k for k in keys) and any(":billing:" in k for k in keys)
        return written and not cache._writing

    wait_for(filled, timeout=5)
    gateway_server.server.call(cache.backend.delete(_fresh_billing_keys(cache)))
    gateway_server.sources.billing.fail = True
    body = gateway_server.query(HOME, token=token).json()
    assert "errors" not in body
    assert body["data"]["me"]["invoices"]["totalCount"] == 12
    [stale] = body["extensions"]["stale"]
    assert stale["path"] == ["me", "invoices"]
    assert stale["source"] == "sandbox-billing"
    assert stale["age"] >= 0


def _fresh_billing_keys(cache: object) -> list[str]:
    data = cache.backend._data  # type: ignore[attr-defined]
    return [k for k in data if (":billing:" in k and not k.endswith(":stale")) or ":resp:" in k]


@pytest.mark.parametrize(
    ("payload", "code", "status"),
    [
        ({"query": "{ me { name "}, "GRAPHQL_PARSE_FAILED", 400),
        ({"query": "{ me { nope } }"}, "GRAPHQL_VALIDATION_FAILED", 400),
        ({"query": "{ me { name } }", "variables": [1]}, "BAD_REQUEST", 400),
        ({"variables": {}}, "BAD_REQUEST", 400),
    ],
)
def test_bad_requests_get_a_clear_error(
    gateway_server: GatewayServer, payload: dict[str, object], code: str, status: int
) -> None:
    response = gateway_server.http.post(
        "/graphql", json=payload, headers={"Authorization": f"Bearer {gateway_server.token()}"}
    )
    assert response.status_code == status
    assert response.json()["errors"][0]["extensions"]["code"] == code
    assert response.json()["errors"][0]["message"]
    _still_up(gateway_server)


def test_unknown_field_names_the_field(gateway_server: GatewayServer) -> None:
    error = gateway_server.query("{ me { nope } }").json()["errors"][0]
    assert "nope" in error["message"]
    assert error["locations"] == [{"line": 1, "column": 8}]


def test_malformed_json_and_wrong_content_type(gateway_server: GatewayServer) -> None:
    bad_json = gateway_server.http.post(
        "/graphql", content=b'{"query": "{ me', headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert bad_json.json()["errors"][0]["message"] == "the body is not valid JSON"
    form = gateway_server.http.post("/graphql", data={"query": "{ me { name } }"})
    assert form.status_code == 415
    text = gateway_server.http.post(
        "/graphql", content=b"{ me { name } }", headers={"Content-Type": "text/plain"}
    )
    assert text.status_code == 415
    _still_up(gateway_server)


def test_oversized_body_is_refused(gateway_server: GatewayServer) -> None:
    big = b'{"query": "' + b" " * 1_100_000 + b'{ me { name } }"}'
    response = gateway_server.http.post(
        "/graphql", content=big, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    _still_up(gateway_server)


def test_too_deep_query_is_refused_with_limit_and_actual(gateway_server: GatewayServer) -> None:
    deep = (
        "{ me { invoices { edges { node { customer { invoices { edges { node { customer"
        " { tickets { edges { node { id } } } } } } } } } } } } }"
    )
    response = gateway_server.query(deep, token=gateway_server.token())
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "limit": 10, "actual": 13}


def test_depth_follows_fragments_and_ignores_introspection(gateway_server: GatewayServer) -> None:
    query = """
      fragment Deep on Invoice { customer { invoices { edges { node { customer {
        tickets { edges { node { id } } } } } } } } }
      { me { invoices { edges { node { ...Deep } } } } }"""
    error = gateway_server.query(query).json()["errors"][0]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    introspection = "{ __schema { types { fields { type { ofType { ofType { name } } } } } } }"
    assert "errors" not in gateway_server.query(introspection).json()


def test_too_many_aliases_are_refused(gateway_server: GatewayServer) -> None:
    aliases = " ".join(f"a{i}: me {{ name }}" for i in range(31))
    error = gateway_server.query("{ " + aliases + " }").json()["errors"][0]
    assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "limit": 30, "actual": 31}


def test_get_cannot_run_mutations(gateway_server: GatewayServer) -> None:
    response = gateway_server.http.get(
        "/graphql",
        params={"query": 'mutation { deleteFile(id: "x") { deletedFileId } }'},
        headers={"Authorization": f"Bearer {gateway_server.token()}"},
    )
    assert response.status_code == 405


def test_get_runs_queries(gateway_server: GatewayServer) -> None:
    response = gateway_server.http.get(
        "/graphql",
        params={"query": "{ me { name } }"},
        headers={"Authorization": f"Bearer {gateway_server.token()}"},
    )
    assert response.json() == {"data": {"me": {"name": "Ada Lovelace"}}}


def test_unexpected_errors_are_masked_with_a_request_id(
    gateway_server: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    crm = gateway_server.sources.crm

    async def broken(ids: object) -> object:
        raise ZeroDivisionError("secret internal detail")

    crm.customers = broken
    response = gateway_server.query("{ me { name } }", token=gateway_server.token())
    [error] = response.json()["errors"]
    assert error["message"] == "Internal server error"
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]
    assert "secret internal detail" not in response.text
    assert any("ZeroDivisionError" in (r.exc_text or "") for r in caplog.records)


def test_bad_page_size_is_bad_user_input(gateway_server: GatewayServer) -> None:
    body = gateway_server.query(
        "{ me { invoices(first: 500) { totalCount } } }", token=gateway_server.token()
    ).json()
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "first"}


def _still_up(server: GatewayServer) -> None:
    response = server.query("{ me { name } }", token=server.token())
    assert response.json() == {"data": {"me": {"name": "Ada Lovelace"}}}
    assert httpx.get(server.url + "/healthz").status_code == 200


STAFF_50 = """query($ids: [ID!]!) { customers(ids: $ids) {
  invoices(first: 5) { edges { node { id } } } } }"""


def test_query_cost_is_checked_before_execution(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(query_max_cost=500)
    with running_gateway(settings) as server:
        ids = [str(1001 + i) for i in range(50)]
        refused = server.query(STAFF_50, {"ids": ids}, headers={"X-API-Key": "test-service-key"})
        assert refused.status_code == 400
        [error] = refused.json()["errors"]
        # customers: 1 + 50 x (invoices: 1 + 5 x (edges: 1 + node: 1 + id: 1))
        assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "limit": 500, "actual": 801}
        assert sum(server.sources.billing.calls.values()) == 0
        small = server.http.post(
            "/graphql",
            json={"query": STAFF_50, "variables": {"ids": ids[:5]}, "extensions": {"cost": True}},
            headers={"X-API-Key": "test-service-key"},
        ).json()
        assert small["extensions"]["cost"] == {"actual": 81, "limit": 500}
        # costs are remembered per document, operation and variables: each still its own
        again = server.query(STAFF_50, {"ids": ids}, headers={"X-API-Key": "test-service-key"})
        assert again.json()["errors"][0]["extensions"]["actual"] == 801
        default_page = server.query("{ me { invoices { edges { node { id } } } } }")
        assert default_page.status_code == 200
