"""Contract: what the Zendesk adapter sends and what the fake answers keep to Zendesk's spec.

The spec is ../shared/specs/zendesk/oas.yaml; tests/sources/contract.py says how its known
gaps (the requested-tickets path, cursor parameters, error answers) are handled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from openapi_core.validation.request.exceptions import RequestValidationError
from openapi_core.validation.response.exceptions import ResponseValidationError

from gateway.domain import Page, TicketDraft, TicketQuery, TicketStatus
from gateway.settings import Settings
from gateway.sources.zendesk import ZendeskHelpdesk
from tests.fakes.provider import Call
from tests.fakes.zendesk import FakeZendesk
from tests.sources.contract import check_zendesk_call, zendesk_spec


@pytest.fixture(scope="module")
def zendesk() -> Iterator[FakeZendesk]:
    zendesk_spec()  # skips the module, with its reason, where ../shared/specs is missing
    with FakeZendesk().running() as fake:
        yield fake


@pytest.fixture
async def helpdesk(zendesk: FakeZendesk) -> AsyncIterator[ZendeskHelpdesk]:
    zendesk.reset()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        zendesk_base_url=zendesk.url,
        zendesk_email=zendesk.email,
        zendesk_api_token=zendesk.token,
        retry_base_delay=0.01,
    )
    adapter = ZendeskHelpdesk(settings)
    yield adapter
    await adapter.aclose()


async def test_every_exchange_of_the_adapter_keeps_to_the_spec(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("ada@example.com", "Ada Lovelace")
    grace = zendesk.add_user("grace@example.com", "Grace Hopper")
    statuses = ["new", "open", "pending", "hold", "solved", "closed"]
    for n in range(14):
        zendesk.add_ticket(ada, f"Question {n}", status=statuses[n % 6], priority=None)
    ids = [zendesk.add_ticket(grace, f"Order {n}", priority="low") for n in range(3)]

    [first] = await helpdesk.ticket_pages([TicketQuery(requester_id=ada, first=5)])
    assert isinstance(first, Page)
    await helpdesk.ticket_pages(
        [
            TicketQuery(requester_id=ada, first=5, after=first.end_cursor),
            TicketQuery(requester_id=grace, first=20, status=TicketStatus.OPEN),
        ]
    )
    await helpdesk.tickets([*ids, "4242"])
    others = [zendesk.add_user(f"c{n}@example.com") for n in range(4)]
    for user in others:
        zendesk.add_ticket(user, "Where is my order?")
    staff = await helpdesk.ticket_pages_indexed(
        [TicketQuery(requester_id=u, first=2) for u in (ada, grace, *others)]
    )
    assert all(isinstance(page, Page) for page in staff)
    counts = await helpdesk.ticket_counts(
        [TicketQuery(requester_id=ada), TicketQuery(requester_id=ada, status=TicketStatus.OPEN)]
    )
    assert counts == [14, 3]
    await helpdesk.requester_ids_by_email(["ada@example.com", "nobody@example.com"])
    created = await helpdesk.create_ticket(ada, TicketDraft(subject="S", description="D"), "k")
    again = await helpdesk.create_ticket(ada, TicketDraft(subject="S", description="D"), "k")
    await helpdesk.create_ticket(grace, TicketDraft("S", "D", priority="urgent"), None)
    assert again == created

    validated_as = {(call.method, check_zendesk_call(call)) for call in zendesk.calls}

    assert validated_as == {
        ("GET", "/api/v2/tickets"),  # the requested-tickets calls (see contract.py)
        ("GET", "/api/v2/tickets/show_many"),
        ("GET", "/api/v2/users/search"),
        ("GET", "/api/v2/search/export"),
        ("GET", f"/api/v2/users/{ada}/related"),
        ("GET", "/api/v2/search/count"),
        ("POST", "/api/v2/tickets"),
    }
    assert {call.status for call in zendesk.calls} == {200, 201}
    assert len(zendesk.calls) == 12


async def test_the_fakes_other_routes_answer_by_the_spec(zendesk: FakeZendesk) -> None:
    zendesk.reset()
    ada = zendesk.add_user("ada@example.com")
    ticket = zendesk.add_ticket(ada, "Q")
    headers = {"Authorization": zendesk.authorization}
    async with httpx.AsyncClient(base_url=zendesk.url, headers=headers) as client:
        for path, params in [
            (f"/api/v2/tickets/{ticket}", {}),
            (f"/api/v2/users/{ada}", {}),
            ("/api/v2/users/show_many", {"ids": f"{ada},4242"}),
            ("/api/v2/users/search", {"external_id": "none"}),
        ]:
            response = await client.get(path, params=params)
            assert response.status_code == 200, path
    for call in zendesk.calls:
        check_zendesk_call(call)


def _recorded(**changes: Any) -> Call:
    """A well-formed show_many exchange, altered by `changes`."""
    body = {"tickets": [{"id": 1, "requester_id": 2, "status": "open", "subject": "Q"}]}
    call = Call(
        route="tickets_show_many",
        method="GET",
        path="/api/v2/tickets/show_many",
        query="ids=1",
        params=[("ids", "1")],
        headers={"authorization": "Basic YTpi"},
        body=b"",
        json=None,
        at=0.0,
        status=200,
        response_body=orjson.dumps(body),
        response_headers={"content-type": "application/json"},
    )
    return dataclasses.replace(call, **changes)


def test_the_check_accepts_a_good_exchange_and_catches_broken_ones() -> None:
    assert check_zendesk_call(_recorded()) == "/api/v2/tickets/show_many"
    with pytest.raises(RequestValidationError):
        check_zendesk_call(_recorded(headers={}))  # no basic auth
    with pytest.raises(RequestValidationError):
        check_zendesk_call(_recorded(params=[], query=""))  # ids is required
    no_requester = {"tickets": [{"id": 1, "status": "open"}]}
    with pytest.raises(ResponseValidationError):
        check_zendesk_call(_recorded(response_body=orjson.dumps(no_requester)))
    odd_status = {"tickets": [{"id": 1, "requester_id": 2, "status": "archived"}]}
    with pytest.raises(ResponseValidationError):
        check_zendesk_call(_recorded(response_body=orjson.dumps(odd_status)))
    requested = _recorded(
        path="/api/v2/users/2/tickets/requested",
        params=[("page[size]", "500")],
        query="page%5Bsize%5D=500",
    )
    with pytest.raises(AssertionError):
        check_zendesk_call(requested)  # beyond Zendesk's 100 a page
    bad_create = _recorded(
        method="POST",
        path="/api/v2/tickets",
        params=[],
        query="",
        headers={"authorization": "Basic YTpi", "content-type": "application/json"},
        body=orjson.dumps({"ticket": {"subject": "no comment", "priority": "whenever"}}),
        status=201,
    )
    with pytest.raises(RequestValidationError):
        check_zendesk_call(bad_create)


async def test_the_fakes_search_endpoints_keep_zendesks_limits(zendesk: FakeZendesk) -> None:
    zendesk.reset()
    ada = zendesk.add_user("ada@example.com")
    grace = zendesk.add_user("grace@example.com")
    for n in range(3):
        zendesk.add_ticket(ada, f"Q{n}", status="open")
    zendesk.add_ticket(grace, "G", status="solved")
    headers = {"Authorization": zendesk.authorization}
    async with httpx.AsyncClient(base_url=zendesk.url, headers=headers) as client:

        async def get(path: str, **params: Any) -> httpx.Response:
            return await client.get(path, params=params)

        both = f"requester:{ada} requester:{grace}"  # one keyword twice: either
        export = await get("/api/v2/search/export", query=both, **{"filter[type]": "ticket"})
        assert export.status_code == 200
        assert len(export.json()["results"]) == 4
        page = await get(
            "/api/v2/search/export", query=both, **{"filter[type]": "ticket", "page[size]": "3"}
        )
        assert page.json()["meta"]["has_more"] is True
        after = page.json()["meta"]["after_cursor"]
        rest = await get(
            "/api/v2/search/export",
            query=both,
            **{"filter[type]": "ticket", "page[size]": "3", "page[after]": after},
        )
        assert len(rest.json()["results"]) == 1
        refused = [
            await get("/api/v2/search/export", query=both),  # no filter[type]
            await get(
                "/api/v2/search/export", query=f"type:ticket {both}", **{"filter[type]": "ticket"}
            ),
            await get(
                "/api/v2/search/export",
                query=both,
                **{"filter[type]": "ticket", "page[size]": "1001"},
            ),
            await get("/api/v2/search", query=f"type:ticket {both}", per_page="101"),
            await get("/api/v2/search", query="type:ticket subject:Q"),
        ]
        assert [r.status_code for r in refused] == [400, 400, 400, 400, 400]
        past_cap = await get("/api/v2/search", query=f"type:ticket {both}", page="11")
        assert past_cap.status_code == 422  # Zendesk's search answers 1,000 results at most
        count = await get("/api/v2/search/count", query=f"type:ticket requester:{ada} status:open")
        assert count.json() == {"count": 3}
        related = await get(f"/api/v2/users/{grace}/related")
        assert related.json()["user_related"]["requested_tickets"] == 1
    for call in zendesk.calls:
        if call.status == 200:
            check_zendesk_call(call)
