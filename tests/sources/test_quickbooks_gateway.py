"""The whole gateway with BILLING_SOURCE=quickbooks: portal-home next to Stripe's, the calls
of a staff page, the OAuth grant under load, encrypted at rest, and revoked."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, date, datetime
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet

from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway
from tests.fakes.oauth import CLIENT_ID, CLIENT_SECRET, FakeAuthorizationServer
from tests.fakes.quickbooks import REALM, FakeQuickBooks
from tests.fakes.stripe import running_fake_stripe
from tests.sources.billing_behaviour import link_customer
from tests.test_portal_home import PORTAL_HOME

STRIPE_KEY = "sk_test_quickbooksComparison0001"
FAST = {"retry_base_delay": 0.01, "retry_max_delay": 0.05, "upstream_timeout": 5.0}
STAFF_INVOICES = """query($ids: [ID!]!) { customers(ids: $ids) {
  id invoices(first: 5) { totalCount edges { node { id status total amountDue paidAt } } } } }"""

# Ada's three invoices, as every provider is seeded with them: (status, total, paid,
# created, due, paid on); amounts in cents, dates as the providers keep them (days).
ADA_INVOICES = [
    ("OPEN", 12000, 2000, date(2026, 3, 2), date(2026, 3, 16), None),
    ("PAID", 5000, 5000, date(2026, 2, 1), date(2026, 2, 15), date(2026, 2, 4)),
    ("OPEN", 700, 0, date(2026, 1, 2), date(2026, 1, 16), None),
]


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def cents(amount: int) -> str:
    return f"{amount / 100:.2f}"


@pytest.fixture
def auth() -> Iterator[FakeAuthorizationServer]:
    with FakeAuthorizationServer().running() as server:
        yield server


@pytest.fixture
def quickbooks(auth: FakeAuthorizationServer) -> Iterator[FakeQuickBooks]:
    with FakeQuickBooks(auth).running() as fake:
        yield fake


@pytest.fixture
def start(
    make_settings: Callable[..., Settings],
    redis_url: str,
    cache_prefix: str,
    quickbooks: FakeQuickBooks,
) -> Iterator[Callable[..., GatewayServer]]:
    """Start gateways (keywords: settings) with BILLING_SOURCE=quickbooks on the fakes."""
    refresh_token = quickbooks.auth.connect()
    key = Fernet.generate_key().decode()
    with ExitStack() as stack:

        def start(**overrides: Any) -> GatewayServer:
            values = {
                "billing_source": "quickbooks",
                "quickbooks_client_id": CLIENT_ID,
                "quickbooks_client_secret": CLIENT_SECRET,
                "quickbooks_realm_id": REALM,
                "quickbooks_refresh_token": refresh_token,
                "quickbooks_api_base": quickbooks.api_base,
                "quickbooks_token_url": quickbooks.auth.token_url,
                "token_encryption_key": key,
                "redis_url": redis_url,
                "cache_prefix": cache_prefix,
                **FAST,
                **overrides,
            }
            settings = make_settings(**values)
            return stack.enter_context(running_gateway(settings))

        yield start


def seed_ada(quickbooks: FakeQuickBooks, server: GatewayServer) -> None:
    ada = quickbooks.add_customer("Ada Lovelace", "ada@example.com")
    link_customer(server, "1001", ada)
    for status, total, paid, created, due, paid_on in ADA_INVOICES:
        quickbooks.add_invoice(
            ada,
            total=cents(total),
            balance=cents(total - paid),
            txn_date=created,
            due_date=due,
            paid_on=paid_on,
        )
        assert status in ("OPEN", "PAID")


def stripe_portal_home(
    make_settings: Callable[..., Settings], redis_url: str, cache_prefix: str
) -> dict[str, Any]:
    """Portal-home for Ada on a Stripe gateway seeded with the same invoices."""
    with running_fake_stripe(STRIPE_KEY) as fake:
        settings = make_settings(
            billing_source="stripe",
            stripe_api_key=STRIPE_KEY,
            stripe_api_base=fake.url,
            redis_url=redis_url,
            cache_prefix=cache_prefix + "stripe:",
            **FAST,
        )
        with running_gateway(settings) as server:
            ada = fake.add_customer(email="ada@example.com", name="Ada Lovelace")
            link_customer(server, "1001", ada)
            for status, total, paid, created, due, paid_on in ADA_INVOICES:
                fake.add_invoice(
                    ada,
                    status=status.lower(),
                    total=total,
                    amount_paid=paid,
                    currency="usd",
                    created=midnight(created),
                    due_date=midnight(due),
                    paid_at=midnight(paid_on) if paid_on else None,
                )
            body: dict[str, Any] = server.query(PORTAL_HOME, token=server.token("1001")).json()
            return body


def shape(value: Any) -> Any:
    """The structure of a GraphQL answer: keys and value types, list items merged."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


INVOICE_VALUES = (
    "status",
    "currency",
    "total",
    "amountDue",
    "amountPaid",
    "createdAt",
    "dueDate",
    "paidAt",
)


def test_portal_home_has_stripes_shape_and_values(
    start: Callable[..., GatewayServer],
    quickbooks: FakeQuickBooks,
    make_settings: Callable[..., Settings],
    redis_url: str,
    cache_prefix: str,
) -> None:
    server = start()
    seed_ada(quickbooks, server)
    body = server.query(PORTAL_HOME, token=server.token("1001")).json()
    reference = stripe_portal_home(make_settings, redis_url, cache_prefix)

    assert "errors" not in body, body
    assert "errors" not in reference, reference
    assert shape(body) == shape(reference)
    me, stripe_me = body["data"]["me"], reference["data"]["me"]
    for field in ("id", "name", "email", "company", "phone", "subscriptions", "tickets"):
        assert me[field] == stripe_me[field], field
    assert me["files"]["totalCount"] == stripe_me["files"]["totalCount"]
    ours = [edge["node"] for edge in me["invoices"]["edges"]]
    theirs = [edge["node"] for edge in stripe_me["invoices"]["edges"]]
    assert [[n[k] for k in INVOICE_VALUES] for n in ours] == [
        [n[k] for k in INVOICE_VALUES] for n in theirs
    ]
    assert me["invoices"]["totalCount"] == stripe_me["invoices"]["totalCount"] == 3
    assert {n["source"] for n in ours} == {"quickbooks"}
    assert me["subscriptions"] == []  # QuickBooks has none (Ada has none on Stripe either)


def test_staff_page_of_fifty_customers_calls(
    start: Callable[..., GatewayServer], quickbooks: FakeQuickBooks
) -> None:
    server = start()
    ids = [str(1001 + n) for n in range(50)]
    for n, crm_id in enumerate(ids):
        customer = quickbooks.add_customer(f"Customer {n}", f"qb{n}@example.com")
        link_customer(server, crm_id, customer)
        quickbooks.add_invoice(customer, total="10.00", txn_date=date(2026, 1, 5))
        quickbooks.add_invoice(customer, total="20.00", balance="5.00", txn_date=date(2026, 2, 5))
        quickbooks.add_invoice(customer, total="30.00", balance="0", txn_date=date(2026, 3, 5))
    staff = server.token(None, ["staff"])

    body = server.query(STAFF_INVOICES, {"ids": ids}, token=staff).json()

    assert "errors" not in body, body
    assert [c["invoices"]["totalCount"] for c in body["data"]["customers"]] == [3] * 50
    statements = quickbooks.statements()
    invoice_queries = [s for s in statements if s.startswith("select * from Invoice")]
    payment_queries = [s for s in statements if s.startswith("select * from Payment")]
    # 50 customers: 30 + 20 ids; then the dates of the 50 paid invoices' payments: 30 + 20
    assert (len(invoice_queries), len(payment_queries), len(statements)) == (2, 2, 4)
    assert quickbooks.auth.outcomes() == ["rotated"]  # one access token for all of it
    # warm: the entity and response caches answer
    again = server.query(STAFF_INVOICES, {"ids": ids}, token=staff).json()
    assert again == body
    assert len(quickbooks.statements()) == 4


def test_twenty_requests_meeting_an_expired_token_refresh_it_once(
    start: Callable[..., GatewayServer], quickbooks: FakeQuickBooks
) -> None:
    server = start()
    ids = [str(1001 + n) for n in range(21)]
    for n, crm_id in enumerate(ids):
        customer = quickbooks.add_customer(f"Customer {n}")
        link_customer(server, crm_id, customer)
        quickbooks.add_invoice(customer, total="10.00")
    query = "{ me { invoices { totalCount } } }"
    assert "errors" not in server.query(query, token=server.token(ids[20])).json()
    quickbooks.auth.expire_access_tokens()
    quickbooks.auth.delay = 0.2

    def portal(crm_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = server.query(query, token=server.token(crm_id)).json()
        return answer

    with ThreadPoolExecutor(20) as pool:
        bodies = list(pool.map(portal, ids[:20]))

    assert all(b == {"data": {"me": {"invoices": {"totalCount": 1}}}} for b in bodies), bodies
    assert quickbooks.auth.outcomes() == ["rotated", "rotated"]
    assert [call.status for call in quickbooks.calls].count(401) >= 2


def test_stored_tokens_are_not_readable_in_redis(
    start: Callable[..., GatewayServer],
    quickbooks: FakeQuickBooks,
    redis_url: str,
    cache_prefix: str,
) -> None:
    server = start()
    seed_ada(quickbooks, server)
    assert "errors" not in server.query(PORTAL_HOME, token=server.token("1001")).json()

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=cache_prefix + "*"))
        assert any(b":oauth:quickbooks:" in key for key in keys)
        stored = b"".join(everything_in(client, key) for key in keys)
    finally:
        client.close()
    assert quickbooks.auth.issued
    for token in quickbooks.auth.issued:
        assert token.encode() not in stored


def everything_in(client: redis.Redis, key: bytes) -> bytes:
    kind = client.type(key)
    if kind == b"string":
        return client.get(key) or b""
    if kind == b"hash":
        return b"".join(k + v for k, v in client.hgetall(key).items())
    if kind == b"set":
        return b"".join(client.smembers(key))
    if kind == b"zset":
        return b"".join(client.zrange(key, 0, -1))
    if kind == b"list":
        return b"".join(client.lrange(key, 0, -1))
    return key


def test_revoked_grant_fails_billing_fields_only_and_shows_in_readyz(
    start: Callable[..., GatewayServer], quickbooks: FakeQuickBooks
) -> None:
    server = start()
    seed_ada(quickbooks, server)
    assert "errors" not in server.query(PORTAL_HOME, token=server.token("1001")).json()
    assert server.http.get("/readyz").json()["providers"]["quickbooks"]["auth"] == "ok"
    grace = quickbooks.add_customer("Grace Hopper", "grace@example.com")
    link_customer(server, "1002", grace)
    quickbooks.auth.revoke()  # the company disconnected the app

    body = server.query(PORTAL_HOME, token=server.token("1002")).json()

    me = body["data"]["me"]
    assert me["name"] == "Grace Hopper"
    assert me["tickets"]["totalCount"] == 12
    assert me["files"]["totalCount"] == 10
    assert me["subscriptions"] == []
    assert me["invoices"] is None
    [error] = body["errors"]
    assert error["path"] == ["me", "invoices"]
    assert error["extensions"]["code"] == "INTEGRATION_UNAVAILABLE"
    assert error["extensions"]["source"] == "quickbooks"
    assert error["extensions"]["retryable"] is False
    assert "QUICKBOOKS_REFRESH_TOKEN" in error["message"]

    ready = server.http.get("/readyz")
    # Every replica shares the grant: readiness reports it without leaving rotation.
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["providers"]["quickbooks"] == {"breaker": "closed", "auth": "revoked"}
    # the billing fields fail fast now: no call reaches QuickBooks or its token endpoint
    link_customer(server, "1003", quickbooks.add_customer("Alan Turing"))
    calls, refreshes = quickbooks.count(), len(quickbooks.auth.refreshes)
    again = server.query(PORTAL_HOME, token=server.token("1003")).json()
    assert again["data"]["me"]["invoices"] is None
    assert (quickbooks.count(), len(quickbooks.auth.refreshes)) == (calls, refreshes)


def test_a_second_replica_uses_the_stored_grant_without_refreshing(
    start: Callable[..., GatewayServer], quickbooks: FakeQuickBooks
) -> None:
    first = start()
    seed_ada(quickbooks, first)
    assert "errors" not in first.query(PORTAL_HOME, token=first.token("1001")).json()
    second = start(response_cache="off")
    link_customer(second, "1001", first.sources.crm.data.customers["1001"].billing_id)

    body = second.query(
        "{ me { invoices(status: PAID) { totalCount } } }", token=second.token("1001")
    ).json()

    assert body == {"data": {"me": {"invoices": {"totalCount": 1}}}}
    assert quickbooks.auth.outcomes() == ["rotated"]
