"""A frontend's live updates: Apollo Client over graphql-ws (js/apollo_subscription.cjs).

Two customers' pages subscribe to ticketUpdated; a signed Zendesk webhook about each one's
ticket reaches that customer's page and no other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import GatewayServer
from tests.e2e.conftest import running_gateway
from tests.e2e.node import Node
from tests.webhooks.signing import ZENDESK_SECRET, zendesk_event, zendesk_headers

# sandbox: customer 1001 is help-desk user 900001 with tickets 10000.., 1002 is 900002 (10100..)
ADA = ("1001", "900001", "10003")
GRACE = ("1002", "900002", "10105")


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with running_gateway(
        tmp_path_factory.mktemp("files"), zendesk_webhook_secret=ZENDESK_SECRET
    ) as gateway:
        yield gateway


def _wait_for_listeners(gateway: GatewayServer, *customer_ids: str) -> None:
    """Until the gateway has registered each customer's subscription (graphql-ws sends
    `subscribe` without waiting for an answer, so the client cannot tell)."""
    live = gateway.gateway.services.live
    deadline = time.monotonic() + 10
    while not all(live.subscriber_count(c) for c in customer_ids):
        assert time.monotonic() < deadline, "the subscriptions never reached the gateway"
        time.sleep(0.02)


def _solve(gateway: GatewayServer, event_id: str, requester: str, ticket: str) -> None:
    body = zendesk_event(
        event_id,
        "zen:event-type:ticket.status_changed",
        ticket_id=ticket,
        requester_id=requester,
        status="SOLVED",
    )
    response = gateway.http.post("/webhooks/zendesk", content=body, headers=zendesk_headers(body))
    assert response.status_code == 200, response.text


def _update(who: str, ticket: str) -> dict[str, Any]:
    return {
        "who": who,
        "data": {
            "ticketUpdated": {
                "__typename": "Ticket",
                "id": ticket,
                "subject": "Question 1 from Ada Lovelace",  # what zendesk_event sends
                "status": "SOLVED",
                "priority": "high",
            }
        },
        "errors": None,
    }


def test_a_ticket_update_reaches_only_its_customers_page(
    node: Node, live_gateway: GatewayServer
) -> None:
    tokens = {"ada": live_gateway.token(ADA[0]), "grace": live_gateway.token(GRACE[0])}
    with node.start(
        "apollo_subscription.cjs", GATEWAY_URL=live_gateway.url, TOKENS=json.dumps(tokens)
    ) as pages:
        assert pages.ready == {"ready": ["ada", "grace"]}
        _wait_for_listeners(live_gateway, ADA[0], GRACE[0])

        _solve(live_gateway, "zd-e2e-1", ADA[1], ADA[2])
        assert pages.next_report() == _update("ada", ADA[2])
        _solve(live_gateway, "zd-e2e-2", GRACE[1], GRACE[2])
        assert pages.next_report() == _update("grace", GRACE[2])

        # nothing else arrived on either page before they closed
        assert pages.finish() == [{"done": True}]
