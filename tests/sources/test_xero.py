"""The Xero adapter against the fake Xero and its OAuth server over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from gateway.domain import Invoice, InvoiceQuery, InvoiceStatus, Page
from gateway.errors import IntegrationUnavailable, NotFound
from gateway.settings import RateLimit, Settings
from gateway.sources.xero import IDS_PER_CALL, XeroBilling, parse_xero_date
from tests.fakes.oauth import CLIENT_ID, CLIENT_SECRET, FakeAuthorizationServer
from tests.fakes.xero import MAX_URL, TENANT_ID, FakeXero

FAST = {
    "retry_max_attempts": 3,
    "retry_base_delay": 0.01,
    "retry_max_delay": 0.05,
    "upstream_timeout": 3.0,
}


@pytest.fixture(scope="module")
def auth_server() -> Iterator[FakeAuthorizationServer]:
    with FakeAuthorizationServer().running() as auth:
        yield auth


@pytest.fixture(scope="module")
def xero_server(auth_server: FakeAuthorizationServer) -> Iterator[FakeXero]:
    with FakeXero(auth_server).running() as fake:
        yield fake


@pytest.fixture
def fake(xero_server: FakeXero, auth_server: FakeAuthorizationServer) -> Iterator[FakeXero]:
    auth_server.reset()
    xero_server.reset()
    yield xero_server
    xero_server.minute_limit, xero_server.day_limit = 60, 5000


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def make_billing(
    fake: FakeXero, cache_prefix: str, redis_client: Redis
) -> AsyncIterator[Callable[..., XeroBilling]]:
    """Adapters on the fake; several made in one test are replicas sharing Redis."""
    made: list[XeroBilling] = []
    refresh_token = fake.auth.connect()
    key = Fernet.generate_key().decode()

    def make(day_limit: RateLimit | None = None, **overrides: Any) -> XeroBilling:
        values: dict[str, Any] = {
            "billing_source": "xero",
            "xero_client_id": CLIENT_ID,
            "xero_client_secret": CLIENT_SECRET,
            "xero_tenant_id": TENANT_ID,
            "xero_refresh_token": refresh_token,
            "xero_api_base": fake.url,
            "xero_token_url": fake.auth.token_url,
            "token_encryption_key": key,
            "cache_prefix": cache_prefix,
            **FAST,
            **overrides,
        }
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        options = {"day_limit": day_limit} if day_limit else {}
        billing = XeroBilling(settings, redis_client, **options)
        made.append(billing)
        return billing

    yield make
    for billing in made:
        await billing.aclose()


@pytest.fixture
def billing(make_billing: Callable[..., XeroBilling]) -> XeroBilling:
    return make_billing()


def page(result: Page[Invoice] | Exception) -> Page[Invoice]:
    assert isinstance(result, Page), result
    return result


async def test_fifty_contacts_invoices_take_one_call_per_forty(
    fake: FakeXero, billing: XeroBilling
) -> None:
    contacts = [fake.add_contact(f"Customer {n}", f"c{n}@example.com") for n in range(50)]
    for contact in contacts:
        fake.add_invoice(contact, total="100.00", day=date(2026, 1, 5))
        fake.add_invoice(contact, status="PAID", total="50.00", day=date(2026, 2, 5))

    pages = await billing.invoice_pages([InvoiceQuery(c, first=5) for c in contacts])

    calls = fake.calls_to("invoices")
    assert sorted(len(call.param("ContactIDs").split(",")) for call in calls) == [10, IDS_PER_CALL]
    for call in calls:
        assert call.headers["xero-tenant-id"] == TENANT_ID
        assert len(call.path) + 1 + len(call.query) < MAX_URL
        assert call.param("where") == 'Type=="ACCREC"'
        assert call.param("page") == "1"
    for contact, result in zip(contacts, pages, strict=True):
        found = page(result)
        assert found.total_count == 2
        assert [i.status for i in found.items] == [InvoiceStatus.PAID, InvoiceStatus.OPEN]
        assert {i.billing_customer_id for i in found.items} == {contact}


async def test_statuses_amounts_and_dates(fake: FakeXero, billing: XeroBilling) -> None:
    ada = fake.add_contact("Ada", "ada@example.com")
    ids = {
        status: fake.add_invoice(
            ada,
            status=status,
            total="120.50",
            amount_paid="20.25" if status == "AUTHORISED" else "0",
            day=date(2026, 1, 1 + n),
            due=date(2026, 2, 1),
            paid_on=date(2026, 1, 20),
        )
        for n, status in enumerate(["DRAFT", "SUBMITTED", "AUTHORISED", "PAID", "VOIDED"])
    }
    fake.add_invoice(ada, status="DELETED", total="9.00")
    fake.add_invoice(ada, total="7.00", kind="ACCPAY")  # a bill from Ada, not an invoice to her
    fake.add_invoice(ada, total="5000", currency="JPY", day=date(2025, 1, 1))

    [result] = await billing.invoice_pages([InvoiceQuery(ada, first=20)])
    found = {i.id: i for i in page(result).items}

    assert len(found) == 6
    expected = {
        "DRAFT": (InvoiceStatus.DRAFT, 0, 0),
        "SUBMITTED": (InvoiceStatus.DRAFT, 0, 0),  # awaiting approval: not owed yet
        "AUTHORISED": (InvoiceStatus.OPEN, 10025, 2025),
        "PAID": (InvoiceStatus.PAID, 0, 12050),
        "VOIDED": (InvoiceStatus.VOID, 0, 0),
    }
    for status, (mapped, due, paid) in expected.items():
        invoice = found[ids[status]]
        assert (invoice.status, invoice.amount_due, invoice.amount_paid) == (mapped, due, paid)
        assert (invoice.total, invoice.currency) == (12050, "nzd")
        assert invoice.due_date == datetime(2026, 2, 1, tzinfo=UTC)
    assert found[ids["PAID"]].paid_at == datetime(2026, 1, 20, tzinfo=UTC)
    assert found[ids["AUTHORISED"]].paid_at is None
    assert found[ids["VOIDED"]].created_at == datetime(2026, 1, 5, tzinfo=UTC)
    [yen] = [i for i in found.values() if i.currency == "jpy"]
    assert yen.total == 5000
    # newest first
    created = [i.created_at for i in page(result).items]
    assert created == sorted(created, reverse=True)


def test_both_of_xeros_date_formats() -> None:
    assert parse_xero_date("/Date(1539993600000+0000)/") == datetime(2018, 10, 20, tzinfo=UTC)
    assert parse_xero_date("/Date(1539993600000+1300)/") == datetime(2018, 10, 20, tzinfo=UTC)
    assert parse_xero_date("/Date(1573755038314)/") == datetime(
        2019, 11, 14, 18, 10, 38, 314000, tzinfo=UTC
    )
    assert parse_xero_date("2018-10-20T00:00:00") == datetime(2018, 10, 20, tzinfo=UTC)
    assert parse_xero_date("2019-11-14T18:10:38+00:00") == datetime(
        2019, 11, 14, 18, 10, 38, tzinfo=UTC
    )
    assert parse_xero_date("2018-10-20") == datetime(2018, 10, 20, tzinfo=UTC)
    assert parse_xero_date("yesterday") is None
    assert parse_xero_date(None) is None


async def test_pages_with_page_parameter(fake: FakeXero, billing: XeroBilling) -> None:
    busy = fake.add_contact("Busy", "busy@example.com")
    for n in range(1005):
        fake.add_invoice(busy, total="1.00", day=date(2020 + n // 300, 1 + n % 12, 1))

    [result] = await billing.invoice_pages([InvoiceQuery(busy, first=3)])

    assert page(result).total_count == 1005
    assert [call.param("page") for call in fake.calls_to("invoices")] == ["1", "2"]


async def test_invoices_by_id_forty_a_call(fake: FakeXero, billing: XeroBilling) -> None:
    ada = fake.add_contact("Ada", "ada@example.com")
    ids = [fake.add_invoice(ada, total="1.00") for _ in range(45)]
    deleted = fake.add_invoice(ada, status="DELETED", total="1.00")

    found = await billing.invoices([*ids, deleted, ids[0].upper(), "in_123", "../Contacts"])

    assert [i.id for i in found[:45] if isinstance(i, Invoice)] == ids
    assert found[45] is None  # deleted invoices are hidden
    assert isinstance(found[46], Invoice)  # UUIDs are case-insensitive
    assert found[47:] == [None, None]
    assert len(fake.calls_to("invoices")) == 2


async def test_email_lookup_picks_the_exact_address(fake: FakeXero, billing: XeroBilling) -> None:
    fake.add_contact("Ada AU", "ada@example.com.au")
    fake.add_contact("Ada (old)", "ada@example.com", archived=True)
    ada = fake.add_contact("Ada Lovelace", "Ada@Example.com")

    found = await billing.billing_ids_by_email(["ada@example.com", 'x" or 1==1'])

    assert found == [ada, None]
    # Xero's own search takes the text as it is: nothing is spliced into a `where`
    assert {call.param("searchTerm") for call in fake.calls_to("contacts")} == {
        "ada@example.com",
        'x" or 1==1',
    }
    assert all(call.param("where") is None for call in fake.calls_to("contacts"))


async def test_retry_after_of_a_429_pauses_every_replica(
    fake: FakeXero, make_billing: Callable[..., XeroBilling]
) -> None:
    ada = fake.add_contact("Ada", "ada@example.com")
    first, second = make_billing(), make_billing()
    fake.minute_limit = 1
    assert isinstance((await first.invoice_pages([InvoiceQuery(ada)]))[0], Page)

    [refused] = await first.invoice_pages([InvoiceQuery(ada, first=3)])
    assert isinstance(refused, IntegrationUnavailable)
    assert refused.retry_after is not None
    assert refused.retry_after > 30
    calls = fake.count()

    # The other replica does not ask Xero at all until the pause is over.
    [paused] = await second.invoice_pages([InvoiceQuery(ada, first=4)])
    assert isinstance(paused, IntegrationUnavailable)
    assert paused.retryable is True
    assert paused.retry_after is not None
    assert paused.retry_after > 30
    assert fake.count() == calls


async def test_min_limit_remaining_zero_fills_the_shared_minute(
    fake: FakeXero, billing: XeroBilling
) -> None:
    ada = fake.add_contact("Ada", "ada@example.com")
    fake.minute_limit = 2  # something else already spent most of this minute
    for first in (1, 2):
        assert isinstance((await billing.invoice_pages([InvoiceQuery(ada, first=first)]))[0], Page)
    assert fake.calls[-1].response_headers["x-minlimit-remaining"] == "0"

    [waiting] = await billing.invoice_pages([InvoiceQuery(ada, first=3)])

    # The limiter now knows the minute is spent: no call that could only earn a 429.
    assert isinstance(waiting, IntegrationUnavailable)
    assert waiting.retry_after is not None
    assert waiting.retry_after > 30
    assert [call.status for call in fake.calls] == [200, 200]


async def test_daily_budget_is_kept(
    fake: FakeXero, make_billing: Callable[..., XeroBilling]
) -> None:
    ada = fake.add_contact("Ada", "ada@example.com")
    billing = make_billing(day_limit=RateLimit(2, 86_400))
    for first in (1, 2):
        assert isinstance((await billing.invoice_pages([InvoiceQuery(ada, first=first)]))[0], Page)

    [refused] = await billing.invoice_pages([InvoiceQuery(ada, first=3)])

    assert isinstance(refused, IntegrationUnavailable)
    assert "daily" in refused.message
    assert refused.retry_after is not None
    assert refused.retry_after > 80_000
    assert fake.count() == 2


async def test_a_wrong_tenant_is_a_clear_non_retryable_error(
    make_billing: Callable[..., XeroBilling],
) -> None:
    billing = make_billing(xero_tenant_id="00000000-0000-4000-8000-000000000000")
    [result] = await billing.invoice_pages([InvoiceQuery("a3675fc4-f8dd-4f03-ba5b-f1870566bcd7")])
    assert isinstance(result, IntegrationUnavailable)
    assert result.retryable is False
    assert "XERO_TENANT_ID" in result.message
    with pytest.raises(IntegrationUnavailable, match="XERO_TENANT_ID"):
        await billing.check()  # what `portal-gateway check` says


async def test_expired_token_is_refreshed_once_for_concurrent_calls(
    fake: FakeXero, billing: XeroBilling
) -> None:
    contacts = [fake.add_contact(f"C{n}") for n in range(5)]
    for contact in contacts:
        fake.add_invoice(contact, total="3.00")
    await billing.invoice_pages([InvoiceQuery(contacts[0])])
    fake.auth.expire_access_tokens()
    fake.auth.delay = 0.2

    results = await asyncio.gather(*(billing.invoice_pages([InvoiceQuery(c)]) for c in contacts))

    assert all(page(result).total_count == 1 for [result] in results)
    assert fake.auth.outcomes() == ["rotated", "rotated"]


async def test_check_makes_one_real_call(fake: FakeXero, billing: XeroBilling) -> None:
    await billing.check()
    [call] = fake.calls
    assert (call.path, call.status) == ("/Invoices", 200)


async def test_no_subscriptions_and_no_portal(fake: FakeXero, billing: XeroBilling) -> None:
    assert await billing.subscriptions(["a"]) == [[]]
    with pytest.raises(NotFound, match="no customer billing portal"):
        await billing.create_portal_session("a", "https://portal.example.com")
    assert fake.calls == []
