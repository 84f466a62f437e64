"""Production hardening: persisted documents, incoming rate limits, CSRF, CORS, headers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import GatewayServer

ME = "{ me { name } }"
SERVICE_KEY = "test-service-key"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def post(server: GatewayServer, payload: dict[str, Any], **headers: str) -> Any:
    headers = {"Authorization": f"Bearer {server.token()}", **headers}
    return server.http.post("/graphql", json=payload, headers=headers)


def test_apq_hash_only_then_hash_and_text_then_hash_only(
    start: Callable[..., GatewayServer],
) -> None:
    server = start(persisted_queries="apq")
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": sha(ME)}}
    missing = post(server, {"extensions": persisted}).json()
    assert missing["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    registered = post(server, {"query": ME, "extensions": persisted}).json()
    assert registered == {"data": {"me": {"name": "Ada Lovelace"}}}
    by_hash = post(server, {"extensions": persisted}).json()
    assert by_hash == registered
    # over GET too, with the extension in the query string
    got = server.http.get(
        "/graphql",
        params={"extensions": json.dumps(persisted)},
        headers={"Authorization": f"Bearer {server.token('1002')}"},
    )
    assert got.json() == {"data": {"me": {"name": "Grace Hopper"}}}
    wrong = post(server, {"query": "{ me { id } }", "extensions": persisted})
    assert wrong.status_code == 400
    assert "does not match" in wrong.json()["errors"][0]["message"]


def test_trusted_documents_only(start: Callable[..., GatewayServer], tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "format": "apollo-persisted-query-manifest",
                "version": 1,
                "operations": [{"id": sha(ME), "body": ME, "name": "Me", "type": "query"}],
            }
        )
    )
    server = start(persisted_queries="only", persisted_queries_manifest=manifest)
    by_id = post(server, {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha(ME)}}})
    assert by_id.json() == {"data": {"me": {"name": "Ada Lovelace"}}}
    same_text = post(server, {"query": ME})
    assert same_text.json() == by_id.json()
    other = post(server, {"query": "{ me { name email } }"})
    assert other.status_code == 400
    assert other.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_ALLOWED"
    unknown = post(
        server, {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha("{ x }")}}}
    )
    assert unknown.status_code == 400


def test_manifest_with_a_wrong_id_refuses_to_start(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({sha("{ other }"): ME}))
    with pytest.raises(ValueError, match="not the sha256"):
        create_app(make_settings(persisted_queries="apq", persisted_queries_manifest=manifest))


def test_the_101st_request_in_a_window_is_refused(start: Callable[..., GatewayServer]) -> None:
    server = start(rate_limit_viewer="100/60s", rate_limit_ip="off")
    for _ in range(100):
        assert post(server, {"query": ME}).status_code == 200
    refused = post(server, {"query": ME})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    [error] = refused.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["retryAfter"] > 0
    # another viewer has a budget of its own
    other = server.http.post(
        "/graphql", json={"query": ME}, headers={"Authorization": f"Bearer {server.token('1002')}"}
    )
    assert other.status_code == 200


def test_a_mutation_over_the_limit_changes_nothing(start: Callable[..., GatewayServer]) -> None:
    """A mutation refused by the incoming limit changes nothing, here a file on the
    gateway's own disk (no provider call to hold back)."""
    server = start(response_cache="off", rate_limit_viewer="1/60s", rate_limit_ip="off")
    files = "{ me { files(first: 10) { totalCount edges { node { id } } } } }"
    listed = post(server, {"query": files}).json()["data"]["me"]["files"]
    assert listed["totalCount"] == 10
    delete = "mutation($id: ID!) { deleteFile(id: $id) { deletedFileId } }"
    first = listed["edges"][0]["node"]["id"]
    refused = post(server, {"query": delete, "variables": {"id": first}})
    assert refused.status_code == 429
    service = {"X-API-Key": "test-service-key"}
    left = server.http.post(
        "/graphql",
        json={"query": '{ customer(id: "1001") { files(first: 10) { totalCount } } }'},
        headers=service,
    )
    assert left.json() == {"data": {"customer": {"files": {"totalCount": 10}}}}


def test_ip_and_service_limits_shared_through_redis(
    start: Callable[..., GatewayServer], redis_url: str, cache_prefix: str
) -> None:
    one = start(redis_url=redis_url, cache_prefix=cache_prefix, rate_limit_service="10/60s")
    two = start(redis_url=redis_url, cache_prefix=cache_prefix, rate_limit_service="10/60s")
    headers = {"X-API-Key": "test-service-key"}
    statuses = [
        server.http.post(
            "/graphql", json={"query": '{ customer(id: "1001") { id } }'}, headers=headers
        ).status_code
        for server in (one, two) * 6
    ]
    assert statuses == [200] * 10 + [429, 429]


def test_get_needs_a_preflight_forcing_header(start: Callable[..., GatewayServer]) -> None:
    server = start()
    plain = server.http.get("/graphql", params={"query": "{ __typename }"})
    assert plain.status_code == 400
    assert "CSRF" in plain.json()["errors"][0]["message"]
    preflight = server.http.get(
        "/graphql", params={"query": "{ __typename }"}, headers={"Apollo-Require-Preflight": "1"}
    )
    assert preflight.json() == {"data": {"__typename": "Query"}}


def test_cors_only_for_configured_origins(start: Callable[..., GatewayServer]) -> None:
    server = start(cors_origins=["https://portal.example.com"])
    allowed = server.http.options(
        "/graphql",
        headers={"Origin": "https://portal.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == "https://portal.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"]
    foreign = server.http.options("/graphql", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in foreign.headers


def test_security_headers(start: Callable[..., GatewayServer]) -> None:
    server = start()
    response = post(server, {"query": ME})
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    page = server.http.get("/graphql", headers={"Accept": "text/html"})
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_introspection_and_suggestions_off_when_disabled(
    start: Callable[..., GatewayServer],
) -> None:
    server = start(gateway_introspection=False)
    introspection = post(server, {"query": "{ __schema { types { name } } }"})
    assert introspection.status_code == 400
    assert "introspection" in introspection.json()["errors"][0]["message"].lower()
    typo = post(server, {"query": "{ me { nam } }"}).json()["errors"][0]["message"]
    assert "Did you mean" not in typo
    # a federation router still composes: `_service { sdl }` answers its service key
    router = server.http.post(
        "/graphql", json={"query": "{ _service { sdl } }"}, headers={"X-API-Key": SERVICE_KEY}
    )
    assert router.json()["data"]["_service"]["sdl"].startswith("schema @link")
