"""A service team's view: this gateway as a subgraph behind a real Apollo Federation router.

js/router.cjs composes the gateway's `_service { sdl }` with a second subgraph ("loyalty",
which extends Customer by its key with `loyaltyPoints`) using @apollo/composition and serves
the supergraph with @apollo/gateway. The router sends X-API-Key to this gateway and forwards
the caller's Authorization header.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayServer
from tests.e2e.conftest import SERVICE_KEY
from tests.e2e.node import Node

CUSTOMER_WITH_POINTS = """
query CustomerWithPoints($id: ID!) {
  customer(id: $id) {
    id name email
    invoices(first: 3) { totalCount edges { node { id number status total currency } } }
    loyaltyPoints
  }
}
"""

LEADERS = "{ loyaltyLeaders { id loyaltyPoints name email } }"


@dataclass(frozen=True)
class Router:
    url: str
    supergraph: str

    def query(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.post(
            self.url, json={"query": query, "variables": variables}, headers=headers, timeout=30
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="module")
def router(
    node: Node, e2e_gateway: GatewayServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    supergraph = tmp_path_factory.mktemp("federation") / "supergraph.graphql"
    with node.start(
        "router.cjs",
        PORTAL_URL=f"{e2e_gateway.url}/graphql",
        PORTAL_API_KEY=SERVICE_KEY,
        SUPERGRAPH_OUT=str(supergraph),
    ) as running:
        yield Router(running.ready["router"], Path(supergraph).read_text())


def _codes(body: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    return [(e["extensions"]["code"], e["path"]) for e in body.get("errors", [])]


def test_the_supergraph_joins_customer_across_both_subgraphs(router: Router) -> None:
    customer = re.search(r"type Customer\b[^{]*\{[^}]*\}", router.supergraph)
    assert customer is not None
    definition = customer.group(0)
    assert '@join__type(graph: PORTAL, key: "id")' in definition
    assert '@join__type(graph: LOYALTY, key: "id")' in definition
    assert "loyaltyPoints: Int @join__field(graph: LOYALTY)" in definition
    assert re.search(r"invoices\(.*\): InvoiceConnection @join__field\(graph: PORTAL\)", definition)


def test_one_query_through_the_router_needs_both_subgraphs(
    router: Router, e2e_gateway: GatewayServer
) -> None:
    body = router.query(CUSTOMER_WITH_POINTS, {"id": "1002"})
    assert "errors" not in body, body
    customer = body["data"]["customer"]
    assert customer["loyaltyPoints"] == 340  # from the loyalty subgraph, via _entities
    # every portal field is what the gateway itself answers a service for the same customer
    direct = e2e_gateway.query(
        CUSTOMER_WITH_POINTS.replace("loyaltyPoints", ""),
        {"id": "1002"},
        headers={"X-API-Key": SERVICE_KEY},
    ).json()["data"]["customer"]
    assert {k: v for k, v in customer.items() if k != "loyaltyPoints"} == direct
    assert customer["name"] == "Grace Hopper"
    assert customer["invoices"]["totalCount"] == 12
    assert len(customer["invoices"]["edges"]) == 3


def test_the_router_authenticates_with_the_service_key(
    router: Router, e2e_gateway: GatewayServer
) -> None:
    # no caller credentials at all: only the router's X-API-Key lets it read customer 1002
    through_router = router.query(CUSTOMER_WITH_POINTS, {"id": "1002"})
    assert through_router["data"]["customer"]["name"] == "Grace Hopper"
    anonymous = e2e_gateway.query(CUSTOMER_WITH_POINTS.replace("loyaltyPoints", ""), {"id": "1002"})
    assert anonymous.json()["data"]["customer"] is None
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    wrong_key = e2e_gateway.query("{ customer(id: 1002) { name } }", headers={"X-API-Key": "nope"})
    assert wrong_key.status_code == 401


def test_a_forwarded_customer_token_reaches_only_that_customers_entities(
    router: Router, e2e_gateway: GatewayServer
) -> None:
    token = e2e_gateway.token("1001")
    # loyalty answers the ids; the router asks the portal for the rest with _entities
    body = router.query(LEADERS, token=token)
    leaders = body["data"]["loyaltyLeaders"]
    assert [leader["id"] for leader in leaders] == ["1001", "1002", "1003"]
    assert leaders[0] == {
        "id": "1001",
        "loyaltyPoints": 1250,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
    }
    for other in leaders[1:]:
        assert other["name"] is None
        assert other["email"] is None
        assert other["loyaltyPoints"] is not None  # the loyalty subgraph still answers
    assert sorted(_codes(body)) == [
        ("NOT_FOUND", ["loyaltyLeaders", 1]),
        ("NOT_FOUND", ["loyaltyLeaders", 2]),
    ]
    assert {e["message"] for e in body["errors"]} == {"not found"}  # never "forbidden"

    # the same query with the router's own service credentials alone sees every customer
    as_service = router.query(LEADERS)
    assert "errors" not in as_service
    assert [c["name"] for c in as_service["data"]["loyaltyLeaders"]][1] == "Grace Hopper"


def test_a_forwarded_customer_token_limits_root_fields_too(
    router: Router, e2e_gateway: GatewayServer
) -> None:
    token = e2e_gateway.token("1001")
    own = router.query(CUSTOMER_WITH_POINTS, {"id": "1001"}, token=token)
    assert "errors" not in own
    assert own["data"]["customer"]["name"] == "Ada Lovelace"
    assert own["data"]["customer"]["loyaltyPoints"] == 1250
    other = router.query(CUSTOMER_WITH_POINTS, {"id": "1002"}, token=token)
    assert other["data"]["customer"] is None
    assert _codes(other) == [("NOT_FOUND", ["customer"])]
