"""Who reaches what, through the real server: a customer reaches only its own data, by every path.

Customer A (1001) holds a token; customer B (1002) is the neighbour whose data A must never
reach. Another customer's entity answers NOT_FOUND, exactly like an id that does not exist,
so a customer cannot even learn which ids are taken.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest

from gateway.auth import mint_dev_token
from gateway.schema import print_sdl
from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway
from tests.events.clients import GraphQLSocket

A = "1001"
B = "1002"
SERVICE_KEY = "test-service-key"

OWN_IDS = """{ me { id
  invoices(first: 1) { edges { node { id } } }
  tickets(first: 1) { edges { node { id } } }
  files(first: 1) { edges { node { id name downloadUrl } } } } }"""

BY_ID = {
    "customer": "query($id: ID!) { customer(id: $id) { id name } }",
    "invoice": "query($id: ID!) { invoice(id: $id) { id customer { id } } }",
    "ticket": "query($id: ID!) { ticket(id: $id) { id requester { id } } }",
    "file": "query($id: ID!) { file(id: $id) { id downloadUrl } }",
}
OWNER_FIELD = {"invoice": "customer", "ticket": "requester"}
UNKNOWN_IDS = {
    "customer": "9999",
    "invoice": "in_sbx9999001",
    "ticket": "99999",
    "file": "f_" + base64.urlsafe_b64encode(b"1001/no-such-file.pdf").rstrip(b"=").decode(),
}

ENTITIES = """query($representations: [_Any!]!) { _entities(representations: $representations) {
  __typename
  ... on Customer { id }
  ... on Invoice { id }
  ... on Ticket { id }
  ... on File { id downloadUrl } } }"""

FILES = "{ me { files(first: 50) { totalCount edges { node { id downloadUrl } } } } }"
DELETE_FILE = "mutation($id: ID!) { deleteFile(id: $id) { deletedFileId } }"
CREATE_TICKET = """mutation($input: CreateTicketInput!) {
  createTicket(input: $input) { ticket { id requester { id name } } } }"""
TICKETS = "{ me { tickets(first: 50) { totalCount edges { node { id } } } } }"
UPDATE_PROFILE = (
    "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { id name } }"
)
CUSTOMERS = "query($ids: [ID!]!) { customers(ids: $ids) { id name } }"


def file_id(customer_id: str, name: str) -> str:
    """A file id crafted by hand, in the sandbox store's format."""
    return "f_" + base64.urlsafe_b64encode(f"{customer_id}/{name}".encode()).rstrip(b"=").decode()


def own_entities(server: GatewayServer, customer_id: str) -> dict[str, Any]:
    """The ids a customer's own token lists: its customer, first invoice, ticket and file."""
    body = server.query(OWN_IDS, token=server.token(customer_id)).json()
    assert "errors" not in body
    me = body["data"]["me"]
    file = me["files"]["edges"][0]["node"]
    return {
        "customer": me["id"],
        "invoice": me["invoices"]["edges"][0]["node"]["id"],
        "ticket": me["tickets"]["edges"][0]["node"]["id"],
        "file": file["id"],
        "file_name": file["name"],
        "download_url": file["downloadUrl"],
    }


def codes(body: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    """Error code by error path."""
    return {tuple(e.get("path") or ()): e["extensions"]["code"] for e in body.get("errors", [])}


def privileged_callers(server: GatewayServer) -> dict[str, dict[str, Any]]:
    """The `query` keyword arguments of a staff member and of a service."""
    return {
        "staff": {"token": server.token(None, ["staff"])},
        "service": {"headers": {"X-API-Key": SERVICE_KEY}},
    }


def representations(ids: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"__typename": "Customer", "id": ids["customer"]},
        {"__typename": "Invoice", "id": ids["invoice"]},
        {"__typename": "Ticket", "id": ids["ticket"]},
        {"__typename": "File", "id": ids["file"]},
    ]


# -- reading another customer's entities ------------------------------------------------------


@pytest.mark.parametrize("field", list(BY_ID))
def test_another_customers_entity_is_not_found_by_id(
    gateway_server: GatewayServer, field: str
) -> None:
    query = BY_ID[field]
    own = own_entities(gateway_server, A)[field]
    others = own_entities(gateway_server, B)[field]
    token_a = gateway_server.token(A)

    mine = gateway_server.query(query, {"id": own}, token=token_a).json()
    assert "errors" not in mine
    assert mine["data"][field]["id"] == own
    if field in OWNER_FIELD:
        assert mine["data"][field][OWNER_FIELD[field]] == {"id": A}
    theirs = gateway_server.query(query, {"id": others}, token=gateway_server.token(B)).json()
    assert theirs["data"][field]["id"] == others

    response = gateway_server.query(query, {"id": others}, token=token_a)
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {field: None}
    assert codes(body) == {(field,): "NOT_FOUND"}
    assert gateway_server.url + "/files/" not in response.text
    # never say which: B's id answers exactly like an id that exists nowhere
    unknown = gateway_server.query(query, {"id": UNKNOWN_IDS[field]}, token=token_a).json()
    assert unknown == body


def test_entities_resolve_own_references_and_hide_another_customers(
    gateway_server: GatewayServer,
) -> None:
    own = own_entities(gateway_server, A)
    others = own_entities(gateway_server, B)
    response = gateway_server.query(
        ENTITIES,
        {"representations": representations(own) + representations(others)},
        token=gateway_server.token(A),
    )
    assert response.status_code == 200
    body = response.json()
    entities = body["data"]["_entities"]
    assert [(e["__typename"], e["id"]) for e in entities[:4]] == [
        ("Customer", own["customer"]),
        ("Invoice", own["invoice"]),
        ("Ticket", own["ticket"]),
        ("File", own["file"]),
    ]
    assert entities[4:] == [None, None, None, None]
    assert codes(body) == {("_entities", i): "NOT_FOUND" for i in range(4, 8)}
    # the only download link handed out is A's own
    assert response.text.count(gateway_server.url + "/files/") == 1


def test_another_customers_download_link_is_not_obtainable(
    gateway_server: GatewayServer,
) -> None:
    others = own_entities(gateway_server, B)
    token_a = gateway_server.token(A)
    crafted = file_id(B, others["file_name"])
    assert crafted == others["file"]  # the id format is guessable: ownership must be checked

    through_customer = gateway_server.query(
        f'{{ customer(id: "{B}") {{ files {{ edges {{ node {{ downloadUrl }} }} }} }} }}',
        token=token_a,
    )
    assert through_customer.json()["data"] == {"customer": None}
    assert codes(through_customer.json()) == {("customer",): "NOT_FOUND"}
    assert gateway_server.url + "/files/" not in through_customer.text

    hand_made = [
        crafted,
        file_id(A, f"../{B}/{others['file_name']}"),
        file_id("..", f"{B}/{others['file_name']}"),
        "f_" + base64.urlsafe_b64encode(f"{B}/{others['file_name']}".encode()).decode(),
        "f_" + base64.b64encode(f"{B}/{others['file_name']}".encode()).decode(),
    ]
    for candidate in hand_made:
        response = gateway_server.query(BY_ID["file"], {"id": candidate}, token=token_a)
        assert response.status_code == 200
        assert response.json()["data"] == {"file": None}, candidate
        assert codes(response.json()) == {("file",): "NOT_FOUND"}, candidate
        assert gateway_server.url + "/files/" not in response.text

    # the crafted id is B's real file: B's own token reaches it
    as_b = gateway_server.query(BY_ID["file"], {"id": crafted}, token=gateway_server.token(B))
    assert as_b.json()["data"]["file"]["id"] == crafted
    assert httpx.get(as_b.json()["data"]["file"]["downloadUrl"]).status_code == 200


# -- mutations act as the signed-in customer ---------------------------------------------------


def test_delete_file_of_another_customer_is_not_found_and_deletes_nothing(
    gateway_server: GatewayServer,
) -> None:
    own = own_entities(gateway_server, A)
    others = own_entities(gateway_server, B)
    token_a, token_b = gateway_server.token(A), gateway_server.token(B)

    for candidate in (others["file"], file_id(A, f"../{B}/{others['file_name']}")):
        body = gateway_server.query(DELETE_FILE, {"id": candidate}, token=token_a).json()
        assert body["data"] is None
        assert codes(body) == {("deleteFile",): "NOT_FOUND"}

    b_files = gateway_server.query(FILES, token=token_b).json()["data"]["me"]["files"]
    assert b_files["totalCount"] == 10
    assert others["file"] in {e["node"]["id"] for e in b_files["edges"]}
    assert (gateway_server.settings.sandbox_files_dir / B / others["file_name"]).is_file()
    assert httpx.get(others["download_url"]).status_code == 200

    # A's own file goes, by the same mutation
    deleted = gateway_server.query(DELETE_FILE, {"id": own["file"]}, token=token_a).json()
    assert deleted == {"data": {"deleteFile": {"deletedFileId": own["file"]}}}
    a_files = gateway_server.query(FILES, token=token_a).json()["data"]["me"]["files"]
    assert a_files["totalCount"] == 9
    assert own["file"] not in {e["node"]["id"] for e in a_files["edges"]}
    assert httpx.get(own["download_url"]).status_code == 403
    b_after = gateway_server.query(FILES, token=token_b).json()["data"]["me"]["files"]
    assert b_after["totalCount"] == 10


def test_create_ticket_always_creates_as_the_tokens_customer(
    gateway_server: GatewayServer,
) -> None:
    token_a = gateway_server.token(A)
    draft = {"subject": "Invoice question", "description": "Which plan am I on?"}

    created = gateway_server.query(CREATE_TICKET, {"input": draft}, token=token_a).json()
    assert "errors" not in created
    ticket = created["data"]["createTicket"]["ticket"]
    assert ticket["requester"] == {"id": A, "name": "Ada Lovelace"}

    # a service key next to the customer's token does not widen who the mutation acts as
    beside_key = gateway_server.query(
        CREATE_TICKET, {"input": draft}, token=token_a, headers={"X-API-Key": SERVICE_KEY}
    ).json()
    assert beside_key["data"]["createTicket"]["ticket"]["requester"]["id"] == A

    # the input has no way to name another requester
    for field in ("requester", "requesterId", "customerId"):
        refused = gateway_server.query(
            CREATE_TICKET, {"input": {**draft, field: B}}, token=token_a
        ).json()
        assert refused["data"] is None
        assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    a_tickets = gateway_server.query(TICKETS, token=token_a).json()["data"]["me"]["tickets"]
    assert a_tickets["totalCount"] == 14
    assert ticket["id"] in {e["node"]["id"] for e in a_tickets["edges"]}
    token_b = gateway_server.token(B)
    b_tickets = gateway_server.query(TICKETS, token=token_b).json()["data"]["me"]["tickets"]
    assert b_tickets["totalCount"] == 12
    assert ticket["id"] not in {e["node"]["id"] for e in b_tickets["edges"]}
    as_b = gateway_server.query(BY_ID["ticket"], {"id": ticket["id"]}, token=token_b).json()
    assert codes(as_b) == {("ticket",): "NOT_FOUND"}


def test_update_profile_changes_only_the_signed_in_customer(
    gateway_server: GatewayServer,
) -> None:
    token_a = gateway_server.token(A)
    updated = gateway_server.query(
        UPDATE_PROFILE, {"input": {"name": "Augusta Ada King"}}, token=token_a
    ).json()
    assert updated == {"data": {"updateProfile": {"id": A, "name": "Augusta Ada King"}}}

    refused = gateway_server.query(
        UPDATE_PROFILE, {"input": {"id": B, "name": "Mallory"}}, token=token_a
    ).json()
    assert refused["data"] is None
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    staff = gateway_server.token(None, ["staff"])
    both = gateway_server.query(CUSTOMERS, {"ids": [A, B]}, token=staff).json()
    assert both["data"]["customers"] == [
        {"id": A, "name": "Augusta Ada King"},
        {"id": B, "name": "Grace Hopper"},
    ]
    me_b = gateway_server.query("{ me { name } }", token=gateway_server.token(B)).json()
    assert me_b == {"data": {"me": {"name": "Grace Hopper"}}}


def test_mutations_need_a_customer_token(gateway_server: GatewayServer) -> None:
    own = own_entities(gateway_server, A)
    mutations = [
        (DELETE_FILE, {"id": own["file"]}, "deleteFile"),
        (CREATE_TICKET, {"input": {"subject": "s", "description": "d"}}, "createTicket"),
        (UPDATE_PROFILE, {"input": {"name": "Mallory"}}, "updateProfile"),
    ]
    for who, credentials in privileged_callers(gateway_server).items():
        for mutation, variables, field in mutations:
            body = gateway_server.query(mutation, variables, **credentials).json()
            assert body["data"] is None, (who, field)
            assert codes(body) == {(field,): "FORBIDDEN"}, (who, field)
    assert (gateway_server.settings.sandbox_files_dir / A / own["file_name"]).is_file()
    me_a = gateway_server.query("{ me { name } }", token=gateway_server.token(A)).json()
    assert me_a == {"data": {"me": {"name": "Ada Lovelace"}}}


# -- customers(ids): staff and services only ---------------------------------------------------


def test_customers_by_ids_is_forbidden_to_a_customer(gateway_server: GatewayServer) -> None:
    token_a = gateway_server.token(A)
    attempts = [
        ({"ids": [A, B]}, {}),
        ({"ids": [A]}, {}),  # even its own id: the list is not a customer's field
        ({"ids": [A, B]}, {"X-API-Key": SERVICE_KEY}),  # the customer's token wins
    ]
    for variables, headers in attempts:
        response = gateway_server.query(CUSTOMERS, variables, token=token_a, headers=headers)
        assert response.status_code == 200
        body = response.json()
        assert body["data"] is None
        assert codes(body) == {("customers",): "FORBIDDEN"}
        assert "Grace" not in response.text


def test_staff_and_services_reach_every_customer(gateway_server: GatewayServer) -> None:
    others = own_entities(gateway_server, B)
    for who, credentials in privileged_callers(gateway_server).items():
        body = gateway_server.query(CUSTOMERS, {"ids": [A, B, "9999"]}, **credentials).json()
        assert "errors" not in body, who
        assert body["data"]["customers"] == [
            {"id": A, "name": "Ada Lovelace"},
            {"id": B, "name": "Grace Hopper"},
            None,
        ], who
        for field in BY_ID:
            found = gateway_server.query(BY_ID[field], {"id": others[field]}, **credentials)
            assert "errors" not in found.json(), (who, field)
            assert found.json()["data"][field]["id"] == others[field]
        entities = gateway_server.query(
            ENTITIES, {"representations": representations(others)}, **credentials
        ).json()
        assert [e["id"] for e in entities["data"]["_entities"]] == [
            others[k] for k in ("customer", "invoice", "ticket", "file")
        ], who


# -- no credentials, bad credentials -----------------------------------------------------------


def test_without_credentials_every_field_is_unauthenticated(gateway_server: GatewayServer) -> None:
    own = own_entities(gateway_server, A)
    query = """query($invoice: ID!, $ticket: ID!, $file: ID!) {
      me { id } customer(id: "1001") { id } invoice(id: $invoice) { id }
      ticket(id: $ticket) { id } file(id: $file) { id } }"""
    variables = {"invoice": own["invoice"], "ticket": own["ticket"], "file": own["file"]}
    response = gateway_server.query(query, variables)
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {
        "me": None,
        "customer": None,
        "invoice": None,
        "ticket": None,
        "file": None,
    }
    assert codes(body) == {
        (f,): "UNAUTHENTICATED" for f in ("me", "customer", "invoice", "ticket", "file")
    }

    entities = gateway_server.query(ENTITIES, {"representations": representations(own)}).json()
    assert entities["data"]["_entities"] == [None, None, None, None]
    assert set(codes(entities).values()) == {"UNAUTHENTICATED"}
    for mutation, variables, field in [
        (CUSTOMERS, {"ids": [A]}, "customers"),
        (DELETE_FILE, {"id": own["file"]}, "deleteFile"),
        (CREATE_TICKET, {"input": {"subject": "s", "description": "d"}}, "createTicket"),
    ]:
        body = gateway_server.query(mutation, variables).json()
        assert body["data"] is None
        assert codes(body) == {(field,): "UNAUTHENTICATED"}


BAD_CREDENTIALS = [
    {"X-API-Key": "wrong-service-key"},
    {"X-API-Key": SERVICE_KEY[:-1]},
    {"X-API-Key": SERVICE_KEY + "x"},
    {"X-API-Key": ""},
    {"Authorization": f"Basic {SERVICE_KEY}"},
    {"Authorization": "Bearer not-a-jwt"},
    {"Authorization": "Bearer"},
]


def test_bad_credentials_answer_401(gateway_server: GatewayServer) -> None:
    secret = gateway_server.settings.dev_secret()
    assert secret is not None
    expired = mint_dev_token(secret, A, ttl=-120)
    for headers in [*BAD_CREDENTIALS, {"Authorization": f"Bearer {expired}"}]:
        response = gateway_server.query(CUSTOMERS, {"ids": [A]}, headers=headers)
        assert response.status_code == 401, headers
        body = response.json()
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert "data" not in body
    # and the right key still works
    good = gateway_server.query(CUSTOMERS, {"ids": [A]}, headers={"X-API-Key": SERVICE_KEY})
    assert good.json() == {"data": {"customers": [{"id": A, "name": "Ada Lovelace"}]}}


# -- a customer linked to billing and help desk by email only ----------------------------------


def test_email_linked_customer_reaches_its_own_invoice_and_ticket(
    gateway_server: GatewayServer,
) -> None:
    # The sandbox's systems share one data set: give the CRM a view of its own whose record
    # of A lacks both links, while billing and help desk still know A by email.
    crm = gateway_server.sources.crm
    crm.data = copy.copy(crm.data)
    crm.data.customers = {
        **crm.data.customers,
        A: msgspec.structs.replace(crm.data.customers[A], billing_id=None, helpdesk_id=None),
    }
    own = own_entities(gateway_server, A)  # the lists find them through the email link
    token_a = gateway_server.token(A)
    for field in ("invoice", "ticket"):
        body = gateway_server.query(BY_ID[field], {"id": own[field]}, token=token_a).json()
        assert "errors" not in body, body
        assert body["data"][field][OWNER_FIELD[field]] == {"id": A}


# -- `_service { sdl }`: the whole schema, for services only where introspection is off -------

SERVICE_SDL = "{ _service { sdl } }"


def sdl_outcome(response: httpx.Response) -> str:
    """The string sdl when the answer is the schema's SDL, else the code `_service` answered."""
    assert response.status_code == 200, response.text
    body = response.json()
    if "errors" not in body:
        assert body["data"]["_service"]["sdl"] + "\n" == print_sdl()
        return "sdl"
    assert body["data"] is None
    assert "type Query" not in response.text
    (code,) = codes(body).values()
    return code


def sdl_outcomes(server: GatewayServer, *, tokens: bool = True) -> dict[str, str]:
    """Each caller's outcome of SERVICE_SDL; without tokens, only anonymous and a service."""
    callers: dict[str, dict[str, Any]] = {
        "anonymous": {},
        "service": {"headers": {"X-API-Key": SERVICE_KEY}},
    }
    if tokens:
        callers["customer"] = {"token": server.token(A)}
        callers["staff"] = {"token": server.token(None, ["staff"])}
        # the customer's token wins over the key a router would add
        callers["customer via router"] = {
            "token": server.token(A),
            "headers": {"X-API-Key": SERVICE_KEY},
        }
    return {who: sdl_outcome(server.query(SERVICE_SDL, **kw)) for who, kw in callers.items()}


def test_service_sdl_answers_everyone_in_development(gateway_server: GatewayServer) -> None:
    outcomes = sdl_outcomes(gateway_server)
    assert outcomes == dict.fromkeys(outcomes, "sdl")


def test_service_sdl_answers_only_services_in_production(
    make_production_settings: Callable[..., Settings],
) -> None:
    with running_gateway(make_production_settings()) as server:
        assert sdl_outcomes(server, tokens=False) == {
            "anonymous": "UNAUTHENTICATED",
            "service": "sdl",
        }
    # introspection turned on on purpose shows the schema anyway: so does `_service`
    with running_gateway(make_production_settings(gateway_introspection=True)) as server:
        assert sdl_outcomes(server, tokens=False) == {"anonymous": "sdl", "service": "sdl"}


def test_service_sdl_answers_only_services_where_introspection_is_off(
    make_settings: Callable[..., Settings],
) -> None:
    with running_gateway(make_settings(gateway_introspection=False)) as server:
        assert sdl_outcomes(server) == {
            "anonymous": "UNAUTHENTICATED",
            "service": "sdl",
            "customer": "FORBIDDEN",
            "staff": "FORBIDDEN",
            "customer via router": "FORBIDDEN",
        }


async def test_service_sdl_over_the_socket_follows_the_same_rule(
    make_settings: Callable[..., Settings],
) -> None:
    subscribe = {"type": "subscribe", "id": "sdl", "payload": {"query": SERVICE_SDL}}
    for introspection, answered in ((False, "FORBIDDEN"), (True, "sdl")):
        settings = make_settings(gateway_introspection=introspection)
        with running_gateway(settings) as server:
            async with GraphQLSocket.open(server.url, server.token(A)) as socket:
                await socket.send(subscribe)
                payload = await socket.next_payload("sdl")
                assert await socket.receive() == {"type": "complete", "id": "sdl"}
        if answered == "sdl":
            assert payload["data"]["_service"]["sdl"] + "\n" == print_sdl()
        else:
            assert payload["data"] is None
            assert codes(payload) == {("_service",): answered}
