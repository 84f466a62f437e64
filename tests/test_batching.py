"""Dataloaders turn a staff page over many customers into one call per source operation."""

from __future__ import annotations

from tests.conftest import GatewayServer

STAFF_PAGE = """query($ids: [ID!]!) { customers(ids: $ids) {
  id name
  invoices(first: 5) { edges { node { id status } } }
  tickets(first: 5) { edges { node { id status } } }
  files(first: 5) { edges { node { id name } } }
} }"""


def _calls(server: GatewayServer) -> dict[str, int]:
    sources = server.sources
    counts: dict[str, int] = {}
    for kind in ("crm", "billing", "helpdesk", "files"):
        for operation, n in getattr(sources, kind).calls.items():
            counts[f"{kind}.{operation}"] = n
    return counts


def test_twenty_customers_make_one_call_per_source(gateway_server: GatewayServer) -> None:
    ids = [str(1001 + i) for i in range(20)]
    response = gateway_server.query(
        STAFF_PAGE, {"ids": ids}, headers={"X-API-Key": "test-service-key"}
    )
    body = response.json()
    assert "errors" not in body
    assert [c["id"] for c in body["data"]["customers"]] == ids
    assert all(len(c["invoices"]["edges"]) == 5 for c in body["data"]["customers"])
    assert _calls(gateway_server) == {
        "crm.customers": 1,
        "billing.invoice_pages": 1,
        "helpdesk.ticket_pages": 1,
        "files.file_pages": 1,
    }


def test_warm_cache_makes_no_provider_calls(gateway_server: GatewayServer) -> None:
    ids = [str(1001 + i) for i in range(20)]
    headers = {"X-API-Key": "test-service-key"}
    gateway_server.query(STAFF_PAGE, {"ids": ids}, headers=headers)
    before = _calls(gateway_server)
    body = gateway_server.query(STAFF_PAGE, {"ids": ids}, headers=headers).json()
    assert "errors" not in body
    assert _calls(gateway_server) == before


def test_identical_keys_in_one_request_are_fetched_once(gateway_server: GatewayServer) -> None:
    query = """{ a: customer(id: "1001") { invoices { totalCount } }
                 b: customer(id: "1001") { invoices { totalCount } }
                 me { invoices { totalCount } } }"""
    body = gateway_server.query(query, token=gateway_server.token("1001")).json()
    assert body["data"]["a"] == body["data"]["b"] == body["data"]["me"]
    assert _calls(gateway_server) == {"crm.customers": 1, "billing.invoice_pages": 1}


def test_unknown_ids_are_null_in_the_list(gateway_server: GatewayServer) -> None:
    body = gateway_server.query(
        '{ customers(ids: ["1001", "nope", "1002"]) { id } }',
        headers={"X-API-Key": "test-service-key"},
    ).json()
    assert body["data"]["customers"] == [{"id": "1001"}, None, {"id": "1002"}]


def test_more_than_a_hundred_ids_is_bad_user_input(gateway_server: GatewayServer) -> None:
    ids = [str(i) for i in range(101)]
    body = gateway_server.query(
        "query($ids: [ID!]!) { customers(ids: $ids) { id } }",
        {"ids": ids},
        headers={"X-API-Key": "test-service-key"},
    ).json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
