"""The portal-home page end to end on the sandbox, through a real server."""

from __future__ import annotations

import httpx

from tests.conftest import GatewayServer

PORTAL_HOME = """
query PortalHome {
  me {
    id name email company phone
    invoices(first: 10) {
      totalCount
      edges { cursor node {
        id number status currency total amountDue amountPaid createdAt dueDate paidAt source
      } }
      pageInfo { hasNextPage endCursor }
    }
    subscriptions { id status plan currentPeriodEnd cancelAtPeriodEnd }
    tickets(first: 10) { totalCount edges { node { id subject status priority createdAt } } }
    files(first: 10) {
      totalCount edges { node { id name size contentType uploadedAt downloadUrl } }
    }
  }
}
"""


def test_portal_home_returns_the_demo_customers_data(gateway_server: GatewayServer) -> None:
    response = gateway_server.query(PORTAL_HOME, token=gateway_server.token("1001"))
    assert response.status_code == 200
    body = response.json()
    assert "errors" not in body
    me = body["data"]["me"]
    assert me["id"] == "1001"
    assert me["name"] == "Ada Lovelace"
    assert me["email"] == "ada@example.com"

    invoices = me["invoices"]
    assert invoices["totalCount"] == 12
    assert len(invoices["edges"]) == 10
    assert invoices["pageInfo"] == {"hasNextPage": True, "endCursor": "10"}
    statuses = {edge["node"]["status"] for edge in invoices["edges"]}
    assert statuses == {"PAID", "OPEN", "DRAFT", "VOID", "UNCOLLECTIBLE"}
    for edge in invoices["edges"]:
        node = edge["node"]
        assert node["currency"] == "usd"
        if node["status"] in ("PAID", "VOID", "DRAFT"):
            assert node["amountDue"] == 0
        if node["status"] == "PAID":
            assert node["amountPaid"] == node["total"]
            assert node["paidAt"] is not None

    assert {s["status"] for s in me["subscriptions"]} == {"active", "canceled"}
    assert me["tickets"]["totalCount"] == 12
    assert {e["node"]["status"] for e in me["tickets"]["edges"]} >= {"OPEN", "SOLVED"}
    assert me["files"]["totalCount"] == 10


def test_download_links_work_and_expire_or_break_when_tampered(
    gateway_server: GatewayServer,
) -> None:
    response = gateway_server.query(PORTAL_HOME, token=gateway_server.token("1001"))
    files = [e["node"] for e in response.json()["data"]["me"]["files"]["edges"]]
    for node in files:
        url = node["downloadUrl"]
        assert url.startswith(gateway_server.url + "/files/")
        download = httpx.get(url)
        assert download.status_code == 200
        assert download.content.startswith(b"Demo document")
        assert len(download.content) == node["size"]
    tampered = files[0]["downloadUrl"][:-2] + (
        "AA" if not files[0]["downloadUrl"].endswith("AA") else "BB"
    )
    assert httpx.get(tampered).status_code == 403


def test_second_page_follows_the_cursor(gateway_server: GatewayServer) -> None:
    query = """query($after: String) { me { invoices(first: 10, after: $after) {
        edges { node { id } } pageInfo { hasNextPage endCursor } } } }"""
    token = gateway_server.token("1001")
    first = gateway_server.query(query, token=token).json()["data"]["me"]["invoices"]
    second = gateway_server.query(
        query, {"after": first["pageInfo"]["endCursor"]}, token=token
    ).json()["data"]["me"]["invoices"]
    assert len(second["edges"]) == 2
    assert second["pageInfo"]["hasNextPage"] is False
    seen = {e["node"]["id"] for e in first["edges"]}
    assert not seen & {e["node"]["id"] for e in second["edges"]}


def test_status_filter(gateway_server: GatewayServer) -> None:
    query = "{ me { invoices(status: OPEN) { totalCount edges { node { status } } } } }"
    invoices = gateway_server.query(query, token=gateway_server.token()).json()["data"]["me"][
        "invoices"
    ]
    assert invoices["totalCount"] > 0
    assert {e["node"]["status"] for e in invoices["edges"]} == {"OPEN"}
