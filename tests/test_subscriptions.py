"""GraphQL subscriptions over WebSocket at /graphql: the graphql-transport-ws protocol,
authentication in connection_init, and each customer seeing only their own events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.auth import mint_dev_token
from gateway.domain import InvoicePaid, TicketUpdated
from gateway.sources.sandbox import demo_data
from tests.conftest import GatewayServer
from tests.events.clients import INVOICE_UPDATED, TICKET_UPDATED, GraphQLSocket, wait_for_async

DATA = demo_data(customers=3, invoices_each=3, tickets_each=2)


def publish(gateway: GatewayServer, event: Any) -> None:
    gateway.server.call(gateway.gateway.events.publisher.publish(event))


def paid(customer_id: str, invoice_id: str, event_id: str = "e1") -> InvoicePaid:
    invoice = DATA.invoices[invoice_id]
    return InvoicePaid(
        event_id=event_id,
        customer_id=customer_id,
        occurred_at=datetime.now(UTC),
        invoice=invoice,
        billing_customer_id=invoice.billing_customer_id,
        invoice_id=invoice.id,
    )


def listeners(gateway: GatewayServer, customer_id: str) -> int:
    return int(gateway.gateway.events.live.subscriber_count(customer_id))


async def close_code(socket: GraphQLSocket) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        await socket.receive(within=5)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_a_customer_receives_own_invoice_and_ticket_updates_only(
    gateway_server: GatewayServer,
) -> None:
    async with (
        GraphQLSocket.open(gateway_server.url, gateway_server.token("1001")) as ada,
        GraphQLSocket.open(gateway_server.url, gateway_server.token("1002")) as grace,
    ):
        await ada.subscribe("inv", INVOICE_UPDATED)
        await ada.subscribe("tic", TICKET_UPDATED)
        await grace.subscribe("inv", INVOICE_UPDATED)
        publish(gateway_server, paid("1001", "in_sbx0001001"))
        ticket = DATA.tickets["10000"]
        publish(
            gateway_server,
            TicketUpdated(
                event_id="t1", customer_id="1001", occurred_at=datetime.now(UTC), ticket=ticket
            ),
        )
        got = [await ada.receive(), await ada.receive()]
        by_id = {m["id"]: m["payload"]["data"] for m in got}
        assert by_id["inv"]["invoiceUpdated"]["id"] == "in_sbx0001001"
        assert by_id["tic"]["ticketUpdated"] == {
            "id": "10000",
            "status": ticket.status.value,
            "subject": ticket.subject,
        }
        await grace.assert_silent(0.2)
        publish(gateway_server, paid("1002", "in_sbx0002001", "e2"))
        assert (await grace.next_payload("inv"))["data"]["invoiceUpdated"]["id"] == "in_sbx0002001"
        await ada.assert_silent(0.1)


async def test_nested_fields_are_resolved_afresh_for_each_event(
    gateway_server: GatewayServer,
) -> None:
    query = "subscription { invoiceUpdated { id customer { id name } } }"
    async with GraphQLSocket.open(gateway_server.url, gateway_server.token("1001")) as ada:
        await ada.subscribe("inv", query)
        for n in range(2):
            publish(gateway_server, paid("1001", "in_sbx0001002", f"e{n}"))
            payload = await ada.next_payload("inv")
            assert payload == {
                "data": {
                    "invoiceUpdated": {
                        "id": "in_sbx0001002",
                        "customer": {"id": "1001", "name": "Ada Lovelace"},
                    }
                }
            }


async def test_complete_and_disconnect_remove_the_listener(gateway_server: GatewayServer) -> None:
    async with GraphQLSocket.open(gateway_server.url, gateway_server.token("1001")) as ada:
        await ada.subscribe("a", INVOICE_UPDATED)
        await ada.subscribe("b", INVOICE_UPDATED)
        assert listeners(gateway_server, "1001") == 2
        await ada.send({"type": "complete", "id": "a"})
        await wait_for_async(lambda: listeners(gateway_server, "1001") == 1, within=5)
        publish(gateway_server, paid("1001", "in_sbx0001001"))
        assert (await ada.receive())["id"] == "b"
    await wait_for_async(lambda: listeners(gateway_server, "1001") == 0, within=5)


async def test_queries_and_errors_over_the_socket(gateway_server: GatewayServer) -> None:
    async with GraphQLSocket.open(gateway_server.url, gateway_server.token("1001")) as ada:
        await ada.send({"type": "subscribe", "id": "q", "payload": {"query": "{ me { name } }"}})
        assert await ada.receive() == {
            "type": "next",
            "id": "q",
            "payload": {"data": {"me": {"name": "Ada Lovelace"}}},
        }
        assert await ada.receive() == {"type": "complete", "id": "q"}
        bad = {"query": "subscription { invoiceUpdated { nope } }"}
        await ada.send({"type": "subscribe", "id": "v", "payload": bad})
        error = await ada.receive()
        assert (error["type"], error["id"]) == ("error", "v")
        assert error["payload"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    staff = mint_dev_token(gateway_server.settings.dev_secret() or "", None, ["staff"])
    async with GraphQLSocket.open(gateway_server.url, staff) as support:
        await support.send({"type": "subscribe", "id": "s", "payload": {"query": INVOICE_UPDATED}})
        refused = await support.receive()
        assert refused["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert refused["payload"]["data"] is None
        assert await support.receive() == {"type": "complete", "id": "s"}


async def test_connection_init_must_carry_a_valid_token(gateway_server: GatewayServer) -> None:
    async with GraphQLSocket.open(gateway_server.url, "not-a-token", ack=False) as forged:
        assert await close_code(forged) == 4403
    async with GraphQLSocket.open(gateway_server.url, None) as anonymous:
        await anonymous.send({"type": "connection_init", "payload": {}})
        assert await close_code(anonymous) == 4403
    async with GraphQLSocket.open(gateway_server.url, None) as early:
        await early.send({"type": "subscribe", "id": "1", "payload": {"query": INVOICE_UPDATED}})
        assert await close_code(early) == 4401
    gateway_server.gateway.subscriptions.init_timeout = 0.2
    async with GraphQLSocket.open(gateway_server.url, None) as silent:
        assert await close_code(silent) == 4408
    short = mint_dev_token(gateway_server.settings.dev_secret() or "", "1001", ttl=1)
    async with GraphQLSocket.open(gateway_server.url, short) as expiring:
        await expiring.subscribe("inv", INVOICE_UPDATED)
        assert await close_code(expiring) == 4403


async def test_protocol_violations_close_the_socket(gateway_server: GatewayServer) -> None:
    token = gateway_server.token("1001")
    async with GraphQLSocket.open(gateway_server.url, token) as again:
        await again.send({"type": "connection_init", "payload": {}})
        assert await close_code(again) == 4429
    async with GraphQLSocket.open(gateway_server.url, token) as twice:
        await twice.subscribe("same", INVOICE_UPDATED)
        await twice.send({"type": "subscribe", "id": "same", "payload": {"query": "{ me { id } }"}})
        assert await close_code(twice) == 4409
    async with GraphQLSocket.open(gateway_server.url, token) as garbled:
        await garbled.connection.send("{not json")
        assert await close_code(garbled) == 4400
    url = gateway_server.url.replace("http://", "ws://") + "/graphql"
    async with connect(url, subprotocols=["graphql-ws"]) as legacy:
        with pytest.raises(ConnectionClosed) as closed:
            await legacy.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4406


def test_subscriptions_are_refused_over_http(gateway_server: GatewayServer) -> None:
    response = gateway_server.query(INVOICE_UPDATED, token=gateway_server.token("1001"))
    assert response.status_code == 400
    assert "WebSocket" in json.dumps(response.json())
