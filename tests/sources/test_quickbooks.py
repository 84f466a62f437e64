"""The QuickBooks adapter against the fake QuickBooks and its OAuth server over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date
from typing import Any

import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from gateway.domain import Invoice, InvoiceQuery, InvoiceStatus, Page
from gateway.errors import BadUserInput, IntegrationUnavailable, NotFound
from gateway.settings import Settings
from gateway.sources.quickbooks import (
    CONCURRENCY,
    IDS_PER_QUERY,
    QuickBooksBilling,
    quote_literal,
)
from tests.fakes.oauth import CLIENT_ID, CLIENT_SECRET, FakeAuthorizationServer
from tests.fakes.quickbooks import PREFIX, REALM, FakeQuickBooks

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
def quickbooks_server(auth_server: FakeAuthorizationServer) -> Iterator[FakeQuickBooks]:
    with FakeQuickBooks(auth_server).running() as fake:
        yield fake


@pytest.fixture
def fake(quickbooks_server: FakeQuickBooks, auth_server: FakeAuthorizationServer) -> FakeQuickBooks:
    auth_server.reset()
    quickbooks_server.reset()
    return quickbooks_server


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def make_billing(
    fake: FakeQuickBooks, cache_prefix: str, redis_client: Redis
) -> AsyncIterator[Callable[..., QuickBooksBilling]]:
    made: list[QuickBooksBilling] = []
    refresh_token = fake.auth.connect()

    def make(**overrides: Any) -> QuickBooksBilling:
        values: dict[str, Any] = {
            "billing_source": "quickbooks",
            "quickbooks_client_id": CLIENT_ID,
            "quickbooks_client_secret": CLIENT_SECRET,
            "quickbooks_realm_id": REALM,
            "quickbooks_refresh_token": refresh_token,
            "quickbooks_api_base": fake.api_base,
            "quickbooks_token_url": fake.auth.token_url,
            "token_encryption_key": Fernet.generate_key().decode(),
            "cache_prefix": cache_prefix,
            **FAST,
            **overrides,
        }
        billing = QuickBooksBilling(Settings(_env_file=None, **values), redis_client)  # type: ignore[call-arg]
        made.append(billing)
        return billing

    yield make
    for billing in made:
        await billing.aclose()


@pytest.fixture
def billing(make_billing: Callable[..., QuickBooksBilling]) -> QuickBooksBilling:
    return make_billing()


def page(result: Page[Invoice] | Exception) -> Page[Invoice]:
    assert isinstance(result, Page), result
    return result


async def test_fifty_customers_invoices_take_one_query_per_thirty(
    fake: FakeQuickBooks, billing: QuickBooksBilling
) -> None:
    customers = [fake.add_customer(f"Customer {n}", f"c{n}@example.com") for n in range(50)]
    for n, customer in enumerate(customers):
        fake.add_invoice(customer, total="100.00", txn_date=date(2026, 1, 1 + n % 28))
        fake.add_invoice(customer, total="50.00", balance="0", txn_date=date(2026, 2, 1))

    pages = await billing.invoice_pages([InvoiceQuery(c, first=5) for c in customers])

    statements = fake.statements()
    invoice_queries = [s for s in statements if s.startswith("select * from Invoice")]
    in_lists = [s.split("in (")[1].split(")")[0].count(",") + 1 for s in invoice_queries]
    assert sorted(in_lists) == [20, IDS_PER_QUERY]
    # the paid invoices' payment dates: 50 payments, 30 ids a query
    assert len([s for s in statements if s.startswith("select * from Payment")]) == 2
    assert len(statements) == 4
    for customer, result in zip(customers, pages, strict=True):
        found = page(result)
        assert found.total_count == 2
        assert {i.billing_customer_id for i in found.items} == {customer}
        assert [i.status for i in found.items] == [InvoiceStatus.PAID, InvoiceStatus.OPEN]
        assert found.items[0].paid_at is not None


async def test_calls_keep_the_api_base_path_prefix_and_send_the_minor_version(
    fake: FakeQuickBooks, billing: QuickBooksBilling
) -> None:
    customer = fake.add_customer("Ada", "ada@example.com")
    fake.add_invoice(customer, total="10.00")
    await billing.invoice_pages([InvoiceQuery(customer)])
    [call] = fake.calls_to("query")
    assert call.path == f"{PREFIX}/v3/company/{REALM}/query"
    assert call.param("minorversion") == "75"
    assert call.param("include") == "invoiceLink"
    assert call.headers["authorization"].startswith("Bearer at-")


async def test_status_and_amounts_come_from_balance_total_and_void(
    fake: FakeQuickBooks, billing: QuickBooksBilling
) -> None:
    customer = fake.add_customer("Ada", "ada@example.com")
    partly = fake.add_invoice(
        customer, total="120.50", balance="20.25", due_date=date(2020, 1, 1), number="A-1"
    )
    paid = fake.add_invoice(customer, total="99.99", balance="0", paid_on=date(2026, 1, 9))
    free = fake.add_invoice(customer, total="0", balance="0")
    void = fake.add_invoice(customer, total="40.00", voided=True)
    yen = fake.add_invoice(customer, total="5000", currency="JPY")
    dinar = fake.add_invoice(customer, total="1.234", balance="1.234", currency="KWD")

    found = {
        i.id: i for i in page((await billing.invoice_pages([InvoiceQuery(customer)]))[0]).items
    }

    overdue = found[partly]
    assert overdue.status is InvoiceStatus.OPEN  # overdue is still owed, still open
    assert (overdue.total, overdue.amount_due, overdue.amount_paid) == (12050, 2025, 10025)
    assert (overdue.currency, overdue.number) == ("usd", "A-1")
    assert overdue.due_date is not None
    assert overdue.due_date.isoformat() == "2020-01-01T00:00:00+00:00"
    assert overdue.hosted_url is not None
    assert overdue.hosted_url.startswith("https://")
    assert overdue.paid_at is None
    assert found[paid].status is InvoiceStatus.PAID
    assert (found[paid].amount_due, found[paid].amount_paid) == (0, 9999)
    assert found[paid].paid_at is not None
    assert found[paid].paid_at.isoformat() == "2026-01-09T00:00:00+00:00"
    assert found[free].status is InvoiceStatus.PAID
    assert found[void].status is InvoiceStatus.VOID
    assert (found[void].total, found[void].amount_due) == (0, 0)
    assert (found[yen].currency, found[yen].total) == ("jpy", 5000)
    assert (found[dinar].currency, found[dinar].amount_due) == ("kwd", 1234)


async def test_pages_of_more_than_a_thousand_invoices(
    fake: FakeQuickBooks, billing: QuickBooksBilling
) -> None:
    customer = fake.add_customer("Busy", "busy@example.com")
    for n in range(1005):
        fake.add_invoice(customer, total="1.00", txn_date=date(2020 + n // 300, 1 + n % 12, 1))

    [result] = await billing.invoice_pages([InvoiceQuery(customer, first=3)])

    assert page(result).total_count == 1005
    starts = [s.split("startposition ")[1].split()[0] for s in fake.statements()]
    assert starts == ["1", "1001"]


async def test_invoices_by_id_thirty_a_query_and_foreign_ids_without_a_call(
    fake: FakeQuickBooks, billing: QuickBooksBilling
) -> None:
    customer = fake.add_customer("Ada", "ada@example.com")
    ids = [fake.add_invoice(customer, total="1.00") for _ in range(35)]

    found = await billing.invoices([*ids, "in_1234", "../v3/x", "99999"])

    assert [i.id for i in found[:35] if isinstance(i, Invoice)] == ids
    assert found[35:] == [None, None, None]
    assert len(fake.statements()) == 2


async def test_email_lookup_escapes_quotes(
    fake: FakeQuickBooks, billing: QuickBooksBilling
) -> None:
    obrien = fake.add_customer("Pat O'Brien", "o'brien@example.com")
    fake.add_customer("Someone Else", "else@example.com")

    found = await billing.billing_ids_by_email(
        ["o'brien@example.com", "x' or Id > '0", "nobody@example.com"]
    )

    assert found == [obrien, None, None]
    assert "select * from Customer where PrimaryEmailAddr = 'o\\'brien@example.com'" in (
        fake.statements()
    )
    assert quote_literal("a\\'b") == "'a\\\\\\'b'"


async def test_an_unreadable_invoice_is_skipped_not_fatal(
    fake: FakeQuickBooks, billing: QuickBooksBilling
) -> None:
    customer = fake.add_customer("Ada", "ada@example.com")
    good = fake.add_invoice(customer, total="1.00")
    bad = fake.add_invoice(customer, total="2.00")
    del fake.invoices[bad]["CurrencyRef"]

    [result] = await billing.invoice_pages([InvoiceQuery(customer)])

    assert [i.id for i in page(result).items] == [good]


async def test_a_bad_cursor_is_bad_user_input(
    fake: FakeQuickBooks, billing: QuickBooksBilling
) -> None:
    customer = fake.add_customer("Ada", "ada@example.com")
    [result] = await billing.invoice_pages([InvoiceQuery(customer, after="in_x")])
    assert isinstance(result, BadUserInput)


async def test_no_subscriptions_and_no_portal(
    fake: FakeQuickBooks, billing: QuickBooksBilling
) -> None:
    assert await billing.subscriptions(["58", "59"]) == [[], []]
    with pytest.raises(NotFound, match="no customer billing portal"):
        await billing.create_portal_session("58", "https://portal.example.com")
    assert fake.calls == []


async def test_expired_token_is_refreshed_and_the_call_repeated_once(
    fake: FakeQuickBooks, billing: QuickBooksBilling
) -> None:
    customers = [fake.add_customer(f"C{n}", None) for n in range(20)]
    for customer in customers:
        fake.add_invoice(customer, total="3.00")
    await billing.invoice_pages([InvoiceQuery(customers[0])])
    fake.auth.expire_access_tokens()
    fake.auth.delay = 0.2

    results = await asyncio.gather(
        *(billing.invoice_pages([InvoiceQuery(customer)]) for customer in customers)
    )

    assert all(page(result).total_count == 1 for [result] in results)
    assert fake.auth.outcomes() == ["rotated", "rotated"]
    # as many met the 401 as Intuit's concurrency limit lets run at once; one refresh
    assert [call.status for call in fake.calls].count(401) == CONCURRENCY


async def test_refused_company_is_a_clear_non_retryable_error(
    make_billing: Callable[..., QuickBooksBilling],
) -> None:
    billing = make_billing(quickbooks_realm_id="1")
    [result] = await billing.invoice_pages([InvoiceQuery("58")])
    assert isinstance(result, IntegrationUnavailable)
    assert result.retryable is False
    assert "QUICKBOOKS_REALM_ID" in result.message
    with pytest.raises(IntegrationUnavailable, match="QUICKBOOKS_REALM_ID"):
        await billing.check()  # what `portal-gateway check` says


async def test_check_makes_one_real_call(fake: FakeQuickBooks, billing: QuickBooksBilling) -> None:
    await billing.check()
    assert fake.statements() == ["select * from Invoice where Id = '0'"]


def test_missing_settings_are_named() -> None:
    with pytest.raises(ValueError, match="QUICKBOOKS_CLIENT_ID, QUICKBOOKS_REALM_ID"):
        QuickBooksBilling(
            Settings(_env_file=None, quickbooks_client_secret="x")  # type: ignore[call-arg]
        )
