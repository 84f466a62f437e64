"""What the outbox tests share: a seeded customer, the queries, reading the gateway."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.conftest import GatewayServer
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.zendesk import FakeZendesk

CREATE = """mutation($input: CreateTicketInput!) {
  createTicket(input: $input) {
    delivery acceptedAt clientMutationId
    ticket { id subject description status delivery { writeId state acceptedAt reason } }
  }
}"""
MY_TICKETS = """{ me { tickets(first: 10) { edges { node {
  id subject status delivery { writeId state reason deliveredAt }
} } } } }"""
TICKET = "query($id: ID!) { ticket(id: $id) { id subject delivery { state } } }"


@dataclass
class Person:
    crm_id: str
    zendesk_id: str
    email: str


def seed(hubspot: FakeHubSpot, zendesk: FakeZendesk, n: int = 0) -> Person:
    email = f"customer{n}@example.com"
    user = zendesk.add_user(email, f"Customer {n}")
    crm_id = hubspot.add(
        firstname="Customer",
        lastname=str(n),
        email=email,
        phone="+1 555 0100",
        zendesk_user_id=user,
    )
    return Person(crm_id, user, email)


def ask(gateway: GatewayServer, query: str, variables: Any = None, *, as_: str) -> Any:
    response = gateway.query(query, variables, token=gateway.token(as_))
    assert response.status_code == 200, response.text
    return response.json()


def create(gateway: GatewayServer, person: Person, subject: str, **more: Any) -> dict[str, Any]:
    draft = {"subject": subject, "description": f"About {subject}", **more}
    body = ask(gateway, CREATE, {"input": draft}, as_=person.crm_id)
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"]["createTicket"]
    return payload


def my_tickets(gateway: GatewayServer, person: Person) -> list[dict[str, Any]]:
    body = ask(gateway, MY_TICKETS, as_=person.crm_id)
    assert "errors" not in body, body
    return [edge["node"] for edge in body["data"]["me"]["tickets"]["edges"]]
