"""The Zendesk adapter against the fake Zendesk over real HTTP."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.domain import Page, Ticket, TicketDraft, TicketQuery, TicketStatus
from gateway.errors import BadUserInput, IntegrationUnavailable, NotFound
from gateway.settings import Settings
from gateway.sources.fanout import fanout_limit
from gateway.sources.zendesk import ZendeskHelpdesk, idempotency_header
from tests.fakes.zendesk import FakeZendesk

FAST = {
    "retry_max_attempts": 3,
    "retry_base_delay": 0.01,
    "retry_max_delay": 0.05,
    "upstream_timeout": 2.0,
}
DRAFT = TicketDraft(subject="Invoice missing", description="Where is March?", priority="high")


def zendesk_settings(fake: FakeZendesk, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "helpdesk_source": "zendesk",
        "zendesk_base_url": fake.url,
        "zendesk_email": fake.email,
        "zendesk_api_token": fake.token,
        **FAST,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def zendesk_server() -> Iterator[FakeZendesk]:
    with FakeZendesk().running() as fake:
        yield fake


@pytest.fixture
def zendesk(zendesk_server: FakeZendesk) -> FakeZendesk:
    """The module's fake Zendesk, emptied for this test."""
    zendesk_server.reset()
    return zendesk_server


@pytest.fixture
async def make_helpdesk() -> AsyncIterator[Callable[..., ZendeskHelpdesk]]:
    made: list[ZendeskHelpdesk] = []

    def make(fake: FakeZendesk, **overrides: Any) -> ZendeskHelpdesk:
        helpdesk = ZendeskHelpdesk(zendesk_settings(fake, **overrides))
        made.append(helpdesk)
        return helpdesk

    yield make
    for helpdesk in made:
        await helpdesk.aclose()


@pytest.fixture
def helpdesk(
    zendesk: FakeZendesk, make_helpdesk: Callable[..., ZendeskHelpdesk]
) -> ZendeskHelpdesk:
    return make_helpdesk(zendesk)


async def page_of(helpdesk: ZendeskHelpdesk, query: TicketQuery) -> Page[Ticket]:
    [page] = await helpdesk.ticket_pages([query])
    assert isinstance(page, Page), page
    return page


def test_it_refuses_to_start_without_its_settings(zendesk: FakeZendesk) -> None:
    with pytest.raises(ValueError, match="ZENDESK_EMAIL, ZENDESK_API_TOKEN"):
        ZendeskHelpdesk(zendesk_settings(zendesk, zendesk_email=None, zendesk_api_token=None))


# -- a requester's tickets ---------------------------------------------------------------


async def test_pages_follow_zendesk_cursors_newest_first(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("ada@example.com")
    ids = [zendesk.add_ticket(ada, f"Question {n}") for n in range(25)]
    zendesk.add_ticket(zendesk.add_user("grace@example.com"), "not Ada's")
    newest_first = ids[::-1]

    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = await page_of(helpdesk, TicketQuery(requester_id=ada, first=10, after=after))
        pages += 1
        seen += [t.id for t in page.items]
        assert page.total_count is None  # cursor pagination counts nothing
        assert page.cursors is not None
        assert len(page.cursors) == len(page.items)
        if not page.has_next_page:
            break
        after = page.end_cursor
    assert seen == newest_first
    assert pages == 3
    calls = zendesk.calls_to("tickets_requested")
    assert len(calls) == 3  # one call a page
    assert {c.path for c in calls} == {f"/api/v2/users/{ada}/tickets/requested"}
    assert [c.param("page[size]") for c in calls] == ["10", "10", "10"]
    assert calls[0].param("page[after]") is None
    assert calls[1].param("page[after]") is not None
    assert calls[0].param("sort_by") == "created_at"
    assert calls[0].param("sort_order") == "desc"


async def test_an_edge_cursor_starts_right_after_its_ticket(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("ada@example.com")
    ids = [zendesk.add_ticket(ada, f"Q{n}") for n in range(8)][::-1]
    first = await page_of(helpdesk, TicketQuery(requester_id=ada, first=5))
    assert first.cursors is not None
    middle = await page_of(helpdesk, TicketQuery(requester_id=ada, first=2, after=first.cursors[1]))
    assert [t.id for t in middle.items] == ids[2:4]
    rest = await page_of(helpdesk, TicketQuery(requester_id=ada, first=10, after=first.cursors[1]))
    assert [t.id for t in rest.items] == ids[2:]
    assert rest.next_cursor is None


@pytest.mark.parametrize(
    ("zendesk_status", "status"),
    [
        ("new", TicketStatus.NEW),
        ("open", TicketStatus.OPEN),
        ("pending", TicketStatus.PENDING),
        ("hold", TicketStatus.ON_HOLD),
        ("solved", TicketStatus.SOLVED),
        ("closed", TicketStatus.CLOSED),
    ],
)
async def test_zendesk_statuses_map_to_ticket_statuses(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk, zendesk_status: str, status: TicketStatus
) -> None:
    ada = zendesk.add_user("ada@example.com")
    id = zendesk.add_ticket(ada, "Q", status=zendesk_status, priority="urgent")
    [page] = await helpdesk.ticket_pages([TicketQuery(requester_id=ada)])
    [by_id] = await helpdesk.tickets([id])
    assert isinstance(page, Page)
    assert page.items == [by_id]
    assert isinstance(by_id, Ticket)
    assert by_id.status is status
    assert by_id.priority == "urgent"
    assert by_id.requester_id == ada


async def test_a_status_filter_collects_matching_tickets_across_pages(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("ada@example.com")
    statuses = ["open", "solved", "pending"]
    for n in range(150):
        zendesk.add_ticket(ada, f"Q{n}", status=statuses[n % 3])
    solved = [t for t in zendesk.tickets_of(ada) if t["status"] == "solved"]
    solved_newest_first = [str(t["id"]) for t in solved][::-1]

    query = TicketQuery(requester_id=ada, first=30, status=TicketStatus.SOLVED)
    first = await page_of(helpdesk, query)
    assert [t.id for t in first.items] == solved_newest_first[:30]
    assert {t.status for t in first.items} == {TicketStatus.SOLVED}
    assert first.has_next_page
    rest = await page_of(
        helpdesk,
        TicketQuery(requester_id=ada, first=30, status=TicketStatus.SOLVED, after=first.end_cursor),
    )
    assert [t.id for t in rest.items] == solved_newest_first[30:]
    assert not rest.has_next_page
    assert all(c.param("page[size]") == "100" for c in zendesk.calls_to("tickets_requested"))


async def test_each_requester_costs_one_call_and_a_failure_only_its_own(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    users = [zendesk.add_user(f"c{n}@example.com") for n in range(30)]
    for user in users:
        zendesk.add_ticket(user, "Q")
    queries = [TicketQuery(requester_id=u, first=5) for u in users]
    queries.append(TicketQuery(requester_id="999999", first=5))  # a link to no user

    pages = await helpdesk.ticket_pages(queries)

    assert all(isinstance(p, Page) and len(p.items) == 1 for p in pages[:30])
    assert isinstance(pages[30], NotFound)
    assert zendesk.count("tickets_requested") == 31


@pytest.mark.parametrize("budget", [None, "6000/60s"], ids=["default", "live-budget"])
async def test_requesters_are_fetched_as_many_at_once_as_the_budget_allows(
    zendesk: FakeZendesk, make_helpdesk: Callable[..., ZendeskHelpdesk], budget: str | None
) -> None:
    helpdesk = make_helpdesk(zendesk, rate_limit_zendesk=budget)
    limit = fanout_limit(zendesk_settings(zendesk, rate_limit_zendesk=budget), "zendesk")
    assert limit == (11 if budget is None else 20)  # 700 a minute: 11 a second; the pool
    users = [zendesk.add_user(f"c{n}@example.com") for n in range(40)]
    zendesk.latency = 0.1

    pages = await helpdesk.ticket_pages([TicketQuery(requester_id=u) for u in users])

    assert all(isinstance(p, Page) for p in pages)
    arrivals = sorted(call.at for call in zendesk.calls)
    # calls that arrived while an earlier one was still being answered
    in_flight = max(sum(1 for t in arrivals if start <= t < start + 0.09) for start in arrivals)
    assert limit // 2 <= in_flight <= limit


async def test_a_cursor_from_elsewhere_is_bad_user_input(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("ada@example.com")
    [garbage] = await helpdesk.ticket_pages([TicketQuery(requester_id=ada, after="!!nope")])
    assert isinstance(garbage, BadUserInput)
    assert zendesk.count() == 0
    # well-formed for us, refused by Zendesk (its cursors expire after an hour)
    stale = base64.urlsafe_b64encode(b'["expired", 0]').decode()
    [expired] = await helpdesk.ticket_pages([TicketQuery(requester_id=ada, after=stale)])
    assert isinstance(expired, BadUserInput)
    assert expired.extensions["field"] == "after"


async def test_nullable_fields_zendesk_sends_are_read(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("ada@example.com")
    id = zendesk.add_ticket(ada, "Q")
    # the live API sends null where the spec's schema says string
    zendesk.tickets[int(id)].update(subject=None, priority=None, description=None, updated_at=None)
    [ticket] = await helpdesk.tickets([id])
    assert isinstance(ticket, Ticket)
    assert (ticket.subject, ticket.priority, ticket.description, ticket.updated_at) == (
        "",
        None,
        None,
        None,
    )


async def test_an_unknown_status_is_unavailable_not_a_crash(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("ada@example.com")
    id = zendesk.add_ticket(ada, "Q")
    zendesk.tickets[int(id)]["status"] = "archived-by-magic"
    [page] = await helpdesk.ticket_pages([TicketQuery(requester_id=ada)])
    [ticket] = await helpdesk.tickets([id])
    assert isinstance(page, IntegrationUnavailable)
    assert isinstance(ticket, IntegrationUnavailable)


# -- tickets by id -----------------------------------------------------------------------


async def test_tickets_by_id_take_one_show_many_per_hundred(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("ada@example.com")
    ids = [zendesk.add_ticket(ada, f"Q{n}") for n in range(150)]
    asked = [*ids, "424242", "not-a-number", ids[3]]

    found = await helpdesk.tickets(asked)

    assert [t.id if isinstance(t, Ticket) else t for t in found] == [*ids, None, None, ids[3]]
    calls = zendesk.calls_to("tickets_show_many")
    assert sorted(len((c.param("ids") or "").split(",")) for c in calls) == [51, 100]


# -- the missing-link hook ---------------------------------------------------------------


async def test_requesters_are_found_by_exact_email(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("Ada@Example.com")
    zendesk.add_user("ada@example.com.evil.test")

    found = await helpdesk.requester_ids_by_email(
        ["ada@example.com", "nobody@example.com", "ADA@example.com", 'x"y@example.com', "no-at"]
    )

    assert found == [ada, None, ada, None, None]
    searches = zendesk.calls_to("users_search")
    assert sorted(c.param("query") or "" for c in searches) == [
        "email:ada@example.com",
        "email:nobody@example.com",
    ]


async def test_a_failed_user_search_fails_only_its_email(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    zendesk.fail("users_search", 403)
    [failed] = await helpdesk.requester_ids_by_email(["ada@example.com"])
    assert isinstance(failed, IntegrationUnavailable)
    assert failed.retryable is False


# -- createTicket ------------------------------------------------------------------------


async def test_create_sends_requester_subject_first_comment_and_priority(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("ada@example.com")

    ticket = await helpdesk.create_ticket(ada, DRAFT, None)

    assert (ticket.subject, ticket.description, ticket.priority) == (
        "Invoice missing",
        "Where is March?",
        "high",
    )
    assert ticket.status is TicketStatus.NEW
    assert ticket.requester_id == ada
    assert datetime.now(UTC) - ticket.created_at < timedelta(minutes=1)
    [call] = zendesk.calls_to("tickets_create")
    assert call.json == {
        "ticket": {
            "requester_id": int(ada),
            "subject": "Invoice missing",
            "comment": {"body": "Where is March?", "public": True},
            "priority": "high",
        }
    }
    assert "idempotency-key" not in call.headers
    expected = (
        "Basic " + base64.b64encode(f"{zendesk.email}/token:{zendesk.token}".encode()).decode()
    )
    assert call.headers["authorization"] == expected


async def test_a_repeat_with_the_same_key_answers_the_first_ticket(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("ada@example.com")
    first = await helpdesk.create_ticket(ada, DRAFT, "createTicket:1001:m-1")
    again = await helpdesk.create_ticket(ada, DRAFT, "createTicket:1001:m-1")
    other = await helpdesk.create_ticket(ada, DRAFT, "createTicket:1001:m-2")

    assert again == first
    assert other.id != first.id
    assert len(zendesk.tickets_of(ada)) == 2
    keys = [c.headers["idempotency-key"] for c in zendesk.calls_to("tickets_create")]
    assert keys[0] == keys[1] == idempotency_header("createTicket:1001:m-1")
    assert keys[2] != keys[0]
    assert "1001" not in keys[0]  # opaque: the gateway's key names a customer


async def test_a_lost_answer_is_retried_with_the_same_key_and_creates_one_ticket(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("ada@example.com")
    zendesk.fail("tickets_create", 503, after_commit=True)

    ticket = await helpdesk.create_ticket(ada, DRAFT, "createTicket:1001:lost")

    assert [str(t["id"]) for t in zendesk.tickets_of(ada)] == [ticket.id]
    calls = zendesk.calls_to("tickets_create")
    assert [c.status for c in calls] == [503, 201]
    assert calls[0].headers["idempotency-key"] == calls[1].headers["idempotency-key"]
    assert calls[1].response_headers["x-idempotency-lookup"] == "hit"


async def test_without_a_key_a_failed_create_is_not_repeated(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("ada@example.com")
    zendesk.fail("tickets_create", 503, after_commit=True)
    with pytest.raises(IntegrationUnavailable):
        await helpdesk.create_ticket(ada, DRAFT, None)
    assert zendesk.count("tickets_create") == 1  # a blind repeat could make a second ticket


async def test_a_key_reused_for_another_ticket_is_bad_user_input(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("ada@example.com")
    await helpdesk.create_ticket(ada, DRAFT, "k")
    with pytest.raises(BadUserInput) as reused:
        await helpdesk.create_ticket(ada, TicketDraft(subject="Other", description="x"), "k")
    assert reused.value.extensions["field"] == "clientMutationId"


async def test_a_requester_zendesk_does_not_know_is_not_found(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    with pytest.raises(NotFound):
        await helpdesk.create_ticket("424242", DRAFT, None)
    with pytest.raises(NotFound):
        await helpdesk.create_ticket("not-a-number", DRAFT, None)
    assert zendesk.count() == 1


# -- errors ------------------------------------------------------------------------------


async def test_a_wrong_token_is_unavailable_without_the_provider_message(
    zendesk: FakeZendesk, make_helpdesk: Callable[..., ZendeskHelpdesk]
) -> None:
    helpdesk = make_helpdesk(zendesk, zendesk_api_token="wrong")
    ada = zendesk.add_user("ada@example.com")
    [page] = await helpdesk.ticket_pages([TicketQuery(requester_id=ada)])
    assert isinstance(page, IntegrationUnavailable)
    assert page.message == "zendesk rejected the gateway's credentials"
    assert page.extensions == {
        "code": "INTEGRATION_UNAVAILABLE",
        "source": "zendesk",
        "retryable": False,
    }
    assert zendesk.count() == 1


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"status": 401}, "zendesk rejected the gateway's credentials"),
        ({"status": 403}, "zendesk rejected the gateway's credentials"),
        ({"status": 429, "headers": {"Retry-After": "30"}}, "zendesk is rate limiting the gateway"),
        ({"status": 500, "times": None}, "zendesk is unavailable (HTTP 500)"),
        ({"malformed": True}, "zendesk answered something the gateway could not read"),
        (
            {"status": 200, "body": {"tickets": "no"}},
            "zendesk answered something the gateway could not read",
        ),
    ],
)
async def test_provider_failures_are_unavailable(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk, fault: dict[str, Any], expected: str
) -> None:
    ada = zendesk.add_user("ada@example.com")
    zendesk.fail("tickets_requested", **fault)
    [page] = await helpdesk.ticket_pages([TicketQuery(requester_id=ada)])
    assert isinstance(page, IntegrationUnavailable)
    assert page.message == expected
    if fault.get("status") == 429:
        assert page.retry_after == 30
        assert page.retryable is True


async def test_a_429_is_retried_after_its_retry_after(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    ada = zendesk.add_user("ada@example.com")
    zendesk.add_ticket(ada, "Q")
    zendesk.fail("tickets_requested", 429, headers={"Retry-After": "0.1"})
    page = await page_of(helpdesk, TicketQuery(requester_id=ada))
    assert len(page.items) == 1
    calls = zendesk.calls_to("tickets_requested")
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 0.1


async def test_a_404_on_show_many_means_none_found(
    zendesk: FakeZendesk, helpdesk: ZendeskHelpdesk
) -> None:
    zendesk.fail("tickets_show_many", 404)
    assert await helpdesk.tickets(["1", "2"]) == [None, None]
