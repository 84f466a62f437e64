"""A frontend developer's view: @apollo/client against the gateway (js/apollo_client.cjs).

The script loads PortalHome, creates a ticket (refetching the page so it shows), retries the
same mutation as a flaky network would, and asks for the ticket as another customer.
Live updates over graphql-ws: test_frontend_subscription.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import GatewayServer
from tests.e2e.node import Node


@pytest.fixture(scope="module")
def client_run(node: Node, e2e_gateway: GatewayServer) -> dict[str, Any]:
    """What Apollo Client saw and cached during one scripted page session."""
    return node.run(
        "apollo_client.cjs",
        GATEWAY_URL=e2e_gateway.url,
        TOKEN=e2e_gateway.token("1001"),
        OTHER_TOKEN=e2e_gateway.token("1002"),
        CLIENT_MUTATION_ID=f"e2e-{uuid.uuid4().hex[:12]}",
    )


def test_portal_home_loads_through_apollo_client(client_run: dict[str, Any]) -> None:
    me = client_run["home"]["me"]
    assert me["__typename"] == "Customer"
    assert (me["id"], me["name"], me["email"]) == ("1001", "Ada Lovelace", "ada@example.com")
    assert me["invoices"]["totalCount"] == 12
    assert [e["node"]["__typename"] for e in me["invoices"]["edges"]] == ["Invoice"] * 10
    assert me["tickets"]["totalCount"] == 12
    assert len(me["files"]["edges"]) == 10


def test_create_ticket_shows_on_the_refetched_page(client_run: dict[str, Any]) -> None:
    created = client_run["created"]
    ticket = created["ticket"]
    assert ticket["subject"] == "Invoice question"
    assert ticket["status"] == "NEW"
    assert ticket["priority"] == "high"
    assert ticket["requester"] == {"__typename": "Customer", "id": "1001", "name": "Ada Lovelace"}
    # the refetched page, read from Apollo's normalised cache
    tickets = client_run["homeAfterCreate"]["me"]["tickets"]
    assert tickets["totalCount"] == 13
    assert tickets["edges"][0]["node"]["id"] == ticket["id"]
    assert client_run["cachedTicket"]["subject"] == "Invoice question"
    assert client_run["cachedTicket"]["requester"] == {"__ref": "Customer:1001"}
    # the watching page was told to render twice: before and after the ticket
    assert client_run["renderedTicketCounts"] == [12, 13]


def test_a_retried_create_ticket_returns_the_same_ticket(
    client_run: dict[str, Any], e2e_gateway: GatewayServer
) -> None:
    assert client_run["retried"] == client_run["created"]
    total = e2e_gateway.query(
        "{ me { tickets { totalCount } } }", token=e2e_gateway.token("1001")
    ).json()["data"]["me"]["tickets"]["totalCount"]
    assert total == 13


def test_another_customer_cannot_read_the_ticket(client_run: dict[str, Any]) -> None:
    other = client_run["otherCustomer"]
    assert other["data"] == {"ticket": None}
    assert other["errors"] == [{"message": "not found", "path": ["ticket"], "code": "NOT_FOUND"}]
