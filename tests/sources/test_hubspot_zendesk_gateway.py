"""The whole gateway with CRM_SOURCE=hubspot and HELPDESK_SOURCE=zendesk, against the fakes.

A real uvicorn gateway on real Redis talks over HTTP to the fake HubSpot and Zendesk
(billing and files stay on the sandbox); each test reads what the fakes recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.zendesk import FakeZendesk
from tests.sources.contract import ZENDESK_SPEC, check_zendesk_call
from tests.webhooks.signing import ZENDESK_SECRET, zendesk_event, zendesk_headers

SERVICE = {"X-API-Key": "test-service-key"}
STAFF_PAGE = """query($ids: [ID!]!) { customers(ids: $ids) {
  id name email
  tickets(first: 5) { totalCount edges { node { id status subject } } pageInfo { hasNextPage } }
} }"""
HOME = "{ me { id name phone company tickets(first: 5) { edges { node { id status } } } } }"
CREATE = """mutation($input: CreateTicketInput!) {
  createTicket(input: $input) { clientMutationId ticket { id subject status requester { id } } }
}"""
STATUSES = ["new", "open", "pending", "hold", "solved", "closed"]
CREATE_QUEUED = """mutation($input: CreateTicketInput!) {
  createTicket(input: $input) { delivery acceptedAt ticket { id subject status } }
}"""
GRAPHQL_STATUS = {"hold": "ON_HOLD"}


@dataclass
class Person:
    crm_id: str
    zendesk_id: str
    email: str
    tickets: list[str]  # Zendesk ids, oldest first


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[FakeHubSpot, FakeZendesk]]:
    with FakeHubSpot().running() as hubspot, FakeZendesk().running() as zendesk:
        yield hubspot, zendesk


@pytest.fixture
def hubspot(providers: tuple[FakeHubSpot, FakeZendesk]) -> FakeHubSpot:
    providers[0].reset()
    return providers[0]


@pytest.fixture
def zendesk(providers: tuple[FakeHubSpot, FakeZendesk]) -> Iterator[FakeZendesk]:
    """The fake Zendesk, emptied; afterwards every request the gateway sent it, and every
    answer it gave that no fault replaced, is checked against Zendesk's OpenAPI spec."""
    fake = providers[1]
    fake.reset()
    yield fake
    if ZENDESK_SPEC.exists():  # test_zendesk_contract.py says so where it is missing
        for call in fake.calls:
            check_zendesk_call(call, answer=not call.faulted)


def seed(hubspot: FakeHubSpot, zendesk: FakeZendesk, count: int, tickets: int = 3) -> list[Person]:
    """`count` customers in HubSpot, each linked to a Zendesk user with `tickets` tickets."""
    people = []
    for n in range(count):
        email = f"customer{n}@example.com"
        user = zendesk.add_user(email, f"Customer {n}")
        ids = [
            zendesk.add_ticket(user, f"Question {i} of {n}", status=STATUSES[(n + i) % 6])
            for i in range(tickets)
        ]
        crm_id = hubspot.add(
            firstname="Customer",
            lastname=str(n),
            email=email,
            phone=f"+1 555 010 {n:04d}",
            zendesk_user_id=user,
            stripe_customer_id=f"cus_sbx{n + 1:04d}",
        )
        people.append(Person(crm_id, user, email, ids))
    return people


def gateway_settings(
    hubspot: FakeHubSpot,
    zendesk: FakeZendesk,
    make_settings: Callable[..., Settings],
    redis_url: str,
    cache_prefix: str,
    **overrides: Any,
) -> Settings:
    return make_settings(
        **{
            "crm_source": "hubspot",
            "hubspot_api_base": hubspot.url,
            "hubspot_access_token": hubspot.token,
            "helpdesk_source": "zendesk",
            "zendesk_base_url": zendesk.url,
            "zendesk_email": zendesk.email,
            "zendesk_api_token": zendesk.token,
            "redis_url": redis_url,
            "cache_prefix": cache_prefix,
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.05,
            "upstream_timeout": 2.0,
            **overrides,
        }
    )


@pytest.fixture
def gateway(
    hubspot: FakeHubSpot,
    zendesk: FakeZendesk,
    make_settings: Callable[..., Settings],
    redis_url: str,
    cache_prefix: str,
) -> Iterator[GatewayServer]:
    with running_gateway(
        gateway_settings(hubspot, zendesk, make_settings, redis_url, cache_prefix)
    ) as server:
        yield server


def ask(
    gateway: GatewayServer,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    response = gateway.query(query, variables, token=token, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_thirty_customers_with_tickets_make_one_hubspot_call_and_one_zendesk_search(
    gateway: GatewayServer, hubspot: FakeHubSpot, zendesk: FakeZendesk
) -> None:
    people = seed(hubspot, zendesk, 30)

    body = ask(gateway, STAFF_PAGE, {"ids": [p.crm_id for p in people]}, headers=SERVICE)

    assert "errors" not in body
    customers = body["data"]["customers"]
    assert [c["id"] for c in customers] == [p.crm_id for p in people]
    assert customers[7]["name"] == "Customer 7"
    assert customers[7]["email"] == "customer7@example.com"
    for person, customer in zip(people, customers, strict=True):
        nodes = [e["node"] for e in customer["tickets"]["edges"]]
        assert [n["id"] for n in nodes] == person.tickets[::-1]  # newest first
        assert [n["status"] for n in nodes] == [
            GRAPHQL_STATUS.get(s, s.upper())
            for s in (zendesk.tickets[int(t)]["status"] for t in person.tickets[::-1])
        ]
        assert customer["tickets"]["pageInfo"]["hasNextPage"] is False
        assert customer["tickets"]["totalCount"] == 3
    cold = {"hubspot": hubspot.counts(), "zendesk": zendesk.counts()}
    print(f"\ncold staff page of 30 customers with tickets: {cold}")
    # every requester's tickets in one export query (`requester:a requester:b ...`)
    assert cold == {"hubspot": {"batch_read": 1}, "zendesk": {"search_export": 1}}
    [export] = zendesk.calls_to("search_export")
    assert export.param("filter[type]") == "ticket"
    assert sorted((export.param("query") or "").split()) == sorted(
        f"requester:{p.zendesk_id}" for p in people
    )

    again = ask(gateway, STAFF_PAGE, {"ids": [p.crm_id for p in people]}, headers=SERVICE)
    assert again["data"] == body["data"]
    assert hubspot.count() + zendesk.count() == 2  # warm: no provider call


def test_readyz_reports_each_providers_breaker(
    gateway: GatewayServer, hubspot: FakeHubSpot, zendesk: FakeZendesk
) -> None:
    [ada] = seed(hubspot, zendesk, 1)
    assert gateway.http.get("/readyz").json()["providers"]["hubspot"] == {"breaker": "closed"}
    hubspot.fail("batch_read", 503, times=None)
    for _ in range(2):  # 2 requests x 3 attempts: past BREAKER_FAILURES (5)
        gateway.query(HUBSPOT_QUERY, {"id": ada.crm_id}, token=gateway.token(None, ["staff"]))
    ready = gateway.http.get("/readyz")
    assert ready.status_code == 200  # an open breaker still serves (stale data, other fields)
    assert ready.json()["status"] == "degraded"
    assert ready.json()["providers"]["hubspot"] == {"breaker": "open"}
    assert ready.json()["providers"]["zendesk"] == {"breaker": "closed"}


def test_a_missing_help_desk_link_is_found_by_email_once_and_remembered(
    gateway: GatewayServer, hubspot: FakeHubSpot, zendesk: FakeZendesk
) -> None:
    people = seed(hubspot, zendesk, 30)
    unlinked = people[:5]
    for person in unlinked:
        hubspot.records[person.crm_id]["zendesk_user_id"] = None
    ids = [p.crm_id for p in people]

    body = ask(gateway, STAFF_PAGE, {"ids": ids}, headers=SERVICE)

    assert "errors" not in body
    first = [e["node"]["id"] for e in body["data"]["customers"][0]["tickets"]["edges"]]
    assert first == unlinked[0].tickets[::-1]
    counts = {"hubspot": hubspot.counts(), "zendesk": zendesk.counts()}
    print(f"\ncold staff page, 5 of 30 without a Zendesk link: {counts}")
    # the 25 linked customers' tickets in one export; the 5 found by email a tick later
    # (still at least SEARCH_FROM) in a second
    assert counts == {
        "hubspot": {"batch_read": 1},
        "zendesk": {"users_search": 5, "search_export": 2},
    }
    # another page shape (a response-cache miss): the links come from the cache
    other = STAFF_PAGE.replace("tickets(first: 5)", "tickets(first: 2)")
    assert "errors" not in ask(gateway, other, {"ids": ids}, headers=SERVICE)
    assert zendesk.count("users_search") == 5


def test_a_customer_without_a_help_desk_account_costs_one_search_not_one_a_page(
    gateway: GatewayServer, hubspot: FakeHubSpot, zendesk: FakeZendesk
) -> None:
    [person] = seed(hubspot, zendesk, 1)
    hubspot.records[person.crm_id]["zendesk_user_id"] = None
    hubspot.records[person.crm_id]["email"] = "never-wrote-to-support@example.com"

    body = ask(gateway, STAFF_PAGE, {"ids": [person.crm_id]}, headers=SERVICE)

    assert "errors" not in body, body
    assert body["data"]["customers"][0]["tickets"]["edges"] == []
    assert zendesk.count("users_search") == 1
    # another page shape (a response-cache miss): "no account" comes from the cache too
    other = STAFF_PAGE.replace("tickets(first: 5)", "tickets(first: 2)")
    again = ask(gateway, other, {"ids": [person.crm_id]}, headers=SERVICE)
    assert again["data"]["customers"][0]["tickets"]["edges"] == []
    assert zendesk.count("users_search") == 1
    assert zendesk.count() == 1  # and no ticket list for a user that does not exist


def test_update_profile_is_read_back_at_once(
    gateway: GatewayServer, hubspot: FakeHubSpot, zendesk: FakeZendesk
) -> None:
    [ada] = seed(hubspot, zendesk, 1)
    token = gateway.token(ada.crm_id)
    before = ask(gateway, HOME, token=token)["data"]["me"]
    assert before["name"] == "Customer 0"

    changed = ask(
        gateway,
        """mutation { updateProfile(input: {name: "Augusta Ada King", phone: "+44 20 7946 0001",
           company: "Engines Ltd"}) { id name phone company } }""",
        token=token,
    )

    assert changed["data"]["updateProfile"] == {
        "id": ada.crm_id,
        "name": "Augusta Ada King",
        "phone": "+44 20 7946 0001",
        "company": "Engines Ltd",
    }
    after = ask(gateway, HOME, token=token)["data"]["me"]
    assert (after["name"], after["phone"], after["company"]) == (
        "Augusta Ada King",
        "+44 20 7946 0001",
        "Engines Ltd",
    )
    stored = hubspot.get(ada.crm_id)
    assert (stored["firstname"], stored["lastname"], stored["company"]) == (
        "Augusta",
        "Ada King",
        "Engines Ltd",
    )


def test_update_profile_values_refused_are_bad_user_input(
    gateway: GatewayServer, hubspot: FakeHubSpot, zendesk: FakeZendesk
) -> None:
    [ada] = seed(hubspot, zendesk, 1)
    token = gateway.token(ada.crm_id)
    hubspot.rejects["phone"] = lambda value: value.startswith("+99")

    refused = ask(
        gateway, 'mutation { updateProfile(input: {phone: "+99 1234567"}) { id } }', token=token
    )
    empty = ask(gateway, 'mutation { updateProfile(input: {name: "  "}) { id } }', token=token)
    unknown = gateway.query(
        'mutation { updateProfile(input: {nickname: "Ada"}) { id } }', token=token
    ).json()

    [error] = refused["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "phone"}
    assert "99" not in error["message"]
    assert empty["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "name"}
    assert unknown["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert hubspot.get(ada.crm_id)["phone"] == "+1 555 010 0000"
    assert hubspot.count("update") == 1  # only the phone HubSpot refused got that far


def test_create_ticket_retried_with_one_client_mutation_id_creates_one_ticket(
    gateway: GatewayServer, hubspot: FakeHubSpot, zendesk: FakeZendesk
) -> None:
    [ada] = seed(hubspot, zendesk, 1, tickets=0)
    token = gateway.token(ada.crm_id)
    draft = {
        "subject": "Invoice missing",
        "description": "Where is March?",
        "clientMutationId": "m-1",
    }

    first = ask(gateway, CREATE, {"input": draft}, token=token)["data"]["createTicket"]
    again = ask(gateway, CREATE, {"input": draft}, token=token)["data"]["createTicket"]

    assert again == first
    assert first["clientMutationId"] == "m-1"
    assert first["ticket"]["status"] == "NEW"
    assert first["ticket"]["requester"] == {"id": ada.crm_id}
    assert [str(t["id"]) for t in zendesk.tickets_of(ada.zendesk_id)] == [first["ticket"]["id"]]
    [post] = zendesk.calls_to("tickets_create")  # the repeat was answered from Redis
    assert post.headers["idempotency-key"]


def test_create_ticket_whose_answer_was_lost_is_queued_once_under_its_key(
    gateway: GatewayServer, hubspot: FakeHubSpot, zendesk: FakeZendesk
) -> None:
    [ada] = seed(hubspot, zendesk, 1, tickets=0)
    token = gateway.token(ada.crm_id)
    draft = {
        "subject": "Lost",
        "description": "The answer never came back",
        "clientMutationId": "m-2",
    }
    # Zendesk makes the ticket every time but the answer never arrives
    zendesk.fail("tickets_create", 502, after_commit=True, times=None)

    first = ask(gateway, CREATE_QUEUED, {"input": draft}, token=token)["data"]["createTicket"]
    assert first["delivery"] == "QUEUED"  # kept in the outbox (tests/outbox/ deliver it)
    assert first["ticket"]["id"].startswith("pending-")
    zendesk.clear_faults()
    retried = ask(gateway, CREATE_QUEUED, {"input": draft}, token=token)["data"]["createTicket"]

    # the retry answers the write already kept: nothing more is sent
    assert retried["ticket"]["id"] == first["ticket"]["id"]
    posts = zendesk.calls_to("tickets_create")
    assert len(posts) == 3  # the first request's three attempts, all under one key
    assert len({p.headers["idempotency-key"] for p in posts}) == 1


def test_a_hubspot_207_returns_the_customers_found(
    gateway: GatewayServer, hubspot: FakeHubSpot, zendesk: FakeZendesk
) -> None:
    a, b = seed(hubspot, zendesk, 2, tickets=0)

    body = ask(
        gateway,
        """query($ids: [ID!]!, $one: ID!) {
             customers(ids: $ids) { id name } one: customer(id: $one) { id } }""",
        {"ids": [a.crm_id, "990099", b.crm_id], "one": "990099"},
        headers=SERVICE,
    )

    assert body["data"]["customers"] == [
        {"id": a.crm_id, "name": "Customer 0"},
        None,
        {"id": b.crm_id, "name": "Customer 1"},
    ]
    assert body["data"]["one"] is None
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    [call] = hubspot.calls_to("batch_read")
    assert call.status == 207


HUBSPOT_QUERY = "query($id: ID!) { customer(id: $id) { id name } }"
ZENDESK_QUERY = "{ me { id name tickets { edges { node { id } } } } }"


# fault injected -> the error's message ({} is the provider) and its extensions besides code
# and source (None: NOT_FOUND); the message is the gateway's own, never the provider's
FAULTS: dict[str, tuple[dict[str, Any], str, dict[str, Any] | None]] = {
    "401": ({"status": 401}, "{} rejected the gateway's credentials", {"retryable": False}),
    "404": ({"status": 404}, "", None),
    "429": (
        {"status": 429, "headers": {"Retry-After": "30"}},
        "{} is rate limiting the gateway",
        {"retryable": True, "retryAfter": 30},
    ),
    "500": ({"status": 500, "times": None}, "{} is unavailable (HTTP 500)", {"retryable": True}),
    "malformed-json": (
        {"malformed": True},
        "{} answered something the gateway could not read",
        {"retryable": True},
    ),
}
NOT_FOUND = {"hubspot": "not found", "zendesk": "no help-desk account for this customer"}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("provider", ["hubspot", "zendesk"])
def test_provider_failures_map_to_graphql_errors_without_provider_detail(
    gateway: GatewayServer,
    hubspot: FakeHubSpot,
    zendesk: FakeZendesk,
    provider: str,
    fault: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    inject, message, extensions = FAULTS[fault]
    [ada] = seed(hubspot, zendesk, 1)
    if provider == "hubspot":
        hubspot.fail("batch_read", **inject)
        staff = gateway.token(None, ["staff"])
        response = gateway.query(HUBSPOT_QUERY, {"id": ada.crm_id}, token=staff)
        path = ["customer"]
    else:
        zendesk.fail("tickets_requested", **inject)
        response = gateway.query(ZENDESK_QUERY, token=gateway.token(ada.crm_id))
        path = ["me", "tickets"]

    body = response.json()
    [error] = body["errors"]
    assert error["path"] == path
    if extensions is None:
        assert error["message"] == NOT_FOUND[provider]
        assert error["extensions"] == {"code": "NOT_FOUND"}
    else:
        assert error["message"] == message.format(provider)
        assert error["extensions"] == {
            "code": "INTEGRATION_UNAVAILABLE",
            "source": provider,
            **extensions,
        }
    if provider == "zendesk":
        # a failing help desk costs only its own field
        assert body["data"]["me"] == {"id": ada.crm_id, "name": "Customer 0", "tickets": None}
    secrets = (hubspot.token, zendesk.token, zendesk.authorization.split()[1])
    for leaked in (
        *secrets,
        zendesk.email,
        hubspot.url,
        zendesk.url,
        "Authentication credentials",
        "Couldn't authenticate",
        "RecordNotFound",
        "Object not found",
        "ten_secondly",
        "APIRateLimitExceeded",
        "internal error",
        "InternalError",
    ):
        assert leaked not in response.text
    # a failure is logged for the operator (provider, operation, status), with no secret
    if extensions is not None:
        assert any(getattr(r, "provider", None) == provider for r in caplog.records)
    assert not any(secret in caplog.text for secret in secrets)


def test_a_customer_cannot_read_or_create_tickets_as_another(
    gateway: GatewayServer, hubspot: FakeHubSpot, zendesk: FakeZendesk
) -> None:
    a, b = seed(hubspot, zendesk, 2)
    token_a = gateway.token(a.crm_id)

    ticket = "query($id: ID!) { ticket(id: $id) { id subject requester { id } } }"
    own = ask(gateway, ticket, {"id": a.tickets[0]}, token=token_a)
    assert own["data"]["ticket"]["requester"] == {"id": a.crm_id}
    theirs = ask(gateway, ticket, {"id": b.tickets[0]}, token=token_a)
    assert theirs["data"]["ticket"] is None
    assert theirs["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    listing = "query($id: ID!) { customer(id: $id) { tickets { edges { node { id } } } } }"
    their_list = ask(gateway, listing, {"id": b.crm_id}, token=token_a)
    assert their_list["data"]["customer"] is None
    assert their_list["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert b.tickets[0] not in str(their_list)

    # the same clientMutationId from both: each gets a ticket of their own
    draft = {"subject": "Mine", "description": "Really mine", "clientMutationId": "same-id"}
    made_a = ask(gateway, CREATE, {"input": draft}, token=token_a)["data"]["createTicket"]
    made_b = ask(gateway, CREATE, {"input": draft}, token=gateway.token(b.crm_id))["data"][
        "createTicket"
    ]
    assert made_a["ticket"]["id"] != made_b["ticket"]["id"]
    created_by_a = zendesk.tickets[int(made_a["ticket"]["id"])]
    assert str(created_by_a["requester_id"]) == a.zendesk_id
    assert len(zendesk.tickets_of(b.zendesk_id)) == len(b.tickets) + 1
    mine = ask(gateway, HOME, token=token_a)["data"]["me"]["tickets"]["edges"]
    assert {e["node"]["id"] for e in mine} == {made_a["ticket"]["id"], *a.tickets}


@pytest.mark.parametrize("response_cache", ["off", "on"])
def test_a_request_over_its_incoming_limit_calls_no_provider(
    hubspot: FakeHubSpot,
    zendesk: FakeZendesk,
    make_settings: Callable[..., Settings],
    redis_url: str,
    cache_prefix: str,
    response_cache: str,
) -> None:
    """A request refused by its incoming limit reaches no provider, a query for data none of
    which is cached as little as a mutation, with the response cache off or bypassed."""
    people = seed(hubspot, zendesk, 4, tickets=1)
    settings = gateway_settings(
        hubspot,
        zendesk,
        make_settings,
        redis_url,
        cache_prefix,
        response_cache=response_cache,
        rate_limit_ip="2/60s",  # one client address: every customer counts against it
        rate_limit_viewer="off",
    )
    with running_gateway(settings) as server:
        no_cache = {"Cache-Control": "no-cache"}  # with the response cache on: no lookup
        for person in people[:2]:
            ask(server, HOME, token=server.token(person.crm_id), headers=no_cache)
        assert hubspot.count() == 2
        assert zendesk.count() == 2

        # a customer none of whose data is cached: only the limit keeps the calls back
        refused = server.query(HOME, token=server.token(people[2].crm_id), headers=no_cache)
        assert refused.status_code == 429
        assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        draft = {"subject": "Refused", "description": "Over the limit"}
        mutation = server.query(CREATE, {"input": draft}, token=server.token(people[3].crm_id))
        assert mutation.status_code == 429
        assert hubspot.count() == 2
        assert zendesk.count() == 2


STAFF_TICKETS = """query($ids: [ID!]!, $status: TicketStatus) { customers(ids: $ids) { id
  tickets(first: 2, status: $status) {
    totalCount edges { cursor node { id status subject createdAt } }
    pageInfo { hasNextPage endCursor }
  } } }"""
OWN_TICKETS = """query($after: String, $status: TicketStatus) { me { id
  tickets(first: 2, after: $after, status: $status) {
    totalCount edges { cursor node { id status subject createdAt } }
    pageInfo { hasNextPage endCursor }
  } } }"""
ONE_TICKETS = """query($id: ID!, $after: String) { customer(id: $id) { id
  tickets(first: 2, after: $after) {
    totalCount edges { cursor node { id status subject createdAt } }
    pageInfo { hasNextPage endCursor }
  } } }"""


def without_cursors(connection: dict[str, Any]) -> dict[str, Any]:
    return {
        "totalCount": connection["totalCount"],
        "nodes": [edge["node"] for edge in connection["edges"]],
        "hasNextPage": connection["pageInfo"]["hasNextPage"],
    }


@pytest.mark.parametrize("status", [None, "OPEN"], ids=["every-status", "open"])
def test_a_staff_page_shows_each_customer_what_their_own_page_shows(
    gateway: GatewayServer, hubspot: FakeHubSpot, zendesk: FakeZendesk, status: str | None
) -> None:
    people = [
        *seed(hubspot, zendesk, 6, tickets=5),
        *seed(hubspot, zendesk, 1, tickets=0),
        *seed(hubspot, zendesk, 1, tickets=1),
    ]
    ids = [p.crm_id for p in people]
    variables: dict[str, Any] = {"ids": ids, "status": status}

    staff = ask(gateway, STAFF_TICKETS, variables, headers=SERVICE)

    assert "errors" not in staff, staff
    assert zendesk.counts() == {"search_export": 1}
    shown = {c["id"]: c["tickets"] for c in staff["data"]["customers"]}
    for person in people:
        own = ask(gateway, OWN_TICKETS, {"status": status}, token=gateway.token(person.crm_id))
        assert "errors" not in own, own
        # the same tickets, totals and pageInfo; cursors are opaque (the list's may carry
        # Zendesk's own), so they are compared by the page they lead to, below
        assert without_cursors(shown[person.crm_id]) == without_cursors(
            own["data"]["me"]["tickets"]
        ), person.crm_id
        wanted = [
            t
            for t in person.tickets
            if status is None or zendesk.tickets[int(t)]["status"] == status.lower()
        ]
        assert shown[person.crm_id]["totalCount"] == len(wanted)
    # the staff page's cursor reads the same next page as the customer's own list
    first = people[0]
    after = shown[first.crm_id]["pageInfo"]["endCursor"]
    if status is None:
        own_first = ask(gateway, OWN_TICKETS, token=gateway.token(first.crm_id))
        own_after = own_first["data"]["me"]["tickets"]["pageInfo"]["endCursor"]
        later = ask(gateway, ONE_TICKETS, {"id": first.crm_id, "after": after}, headers=SERVICE)
        own_later = ask(
            gateway, OWN_TICKETS, {"after": own_after}, token=gateway.token(first.crm_id)
        )
        assert without_cursors(later["data"]["customer"]["tickets"]) == without_cursors(
            own_later["data"]["me"]["tickets"]
        )
        nodes = [e["node"]["id"] for e in later["data"]["customer"]["tickets"]["edges"]]
        assert nodes == first.tickets[::-1][2:4]
        assert later["data"]["customer"]["tickets"]["totalCount"] == 5


def test_ticket_totals_on_every_page_from_zendesks_counts(
    gateway: GatewayServer, hubspot: FakeHubSpot, zendesk: FakeZendesk
) -> None:
    [ada] = seed(hubspot, zendesk, 1, tickets=7)
    token = gateway.token(ada.crm_id)
    counted = "{ me { tickets(first: 2) { edges { node { id } } } } }"

    body = ask(gateway, counted, token=token)
    assert "errors" not in body, body
    assert "user_related" not in zendesk.counts()  # totalCount not selected: no count asked

    first = ask(gateway, OWN_TICKETS, token=token)["data"]["me"]["tickets"]
    assert first["totalCount"] == 7
    assert zendesk.count("user_related") == 1
    second = ask(gateway, OWN_TICKETS, {"after": first["pageInfo"]["endCursor"]}, token=token)
    assert second["data"]["me"]["tickets"]["totalCount"] == 7
    assert zendesk.count("user_related") == 1  # cached like the list
    opened = [t for t in ada.tickets if zendesk.tickets[int(t)]["status"] == "open"]
    by_status = ask(gateway, OWN_TICKETS, {"status": "OPEN"}, token=token)
    assert by_status["data"]["me"]["tickets"]["totalCount"] == len(opened)
    # a customer's own page asks for the count beside the list (no round trip more), so
    # even a page that turns out whole has asked once
    assert zendesk.count("search_count") == 1
    last_page = ask(
        gateway,
        OWN_TICKETS,
        {"after": second["data"]["me"]["tickets"]["pageInfo"]["endCursor"]},
        token=token,
    )
    assert last_page["data"]["me"]["tickets"]["totalCount"] == 7


def test_a_new_ticket_shows_at_once_on_the_own_and_the_staff_page_while_search_lags(
    hubspot: FakeHubSpot,
    zendesk: FakeZendesk,
    make_settings: Callable[..., Settings],
    redis_url: str,
    cache_prefix: str,
) -> None:
    settings = gateway_settings(
        hubspot,
        zendesk,
        make_settings,
        redis_url,
        cache_prefix,
        zendesk_webhook_secret=ZENDESK_SECRET,
    )
    people = seed(hubspot, zendesk, 6, tickets=2)
    ada = people[0]
    ids = [p.crm_id for p in people]
    with running_gateway(settings) as gateway:
        token = gateway.token(ada.crm_id)
        before_staff = ask(gateway, STAFF_TICKETS, {"ids": ids}, headers=SERVICE)
        assert before_staff["data"]["customers"][0]["tickets"]["totalCount"] == 2
        assert ask(gateway, OWN_TICKETS, token=token)["data"]["me"]["tickets"]["totalCount"] == 2

        # Ada opens a ticket; Zendesk's search index does not have it yet, its lists do
        zendesk.freeze_search()
        new = zendesk.add_ticket(ada.zendesk_id, "Newest question", status="new")
        event = zendesk_event(
            "evt-new-1",
            "zen:event-type:ticket.created",
            ticket_id=new,
            requester_id=ada.zendesk_id,
            status="NEW",
        )
        answer = gateway.http.post(
            "/webhooks/zendesk", content=event, headers=zendesk_headers(event)
        )
        assert answer.status_code == 200, answer.text

        own = ask(gateway, OWN_TICKETS, token=token)["data"]["me"]["tickets"]
        assert own["edges"][0]["node"]["id"] == new
        zendesk.reset_calls()
        staff = ask(gateway, STAFF_TICKETS, {"ids": ids}, headers=SERVICE)
        assert "errors" not in staff, staff
        shown = staff["data"]["customers"][0]["tickets"]
        assert shown["edges"][0]["node"]["id"] == new
        assert shown == own  # both from Ada's list now
        # Ada's page from her list (the change is newer than the index); the others cached
        assert zendesk.counts() == {"tickets_requested": 1}
