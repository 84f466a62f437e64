"""The Stripe adapter through the real SDK, against the fake Stripe over HTTP, in the gateway."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import stripe
from prometheus_client import REGISTRY

from gateway.domain import InvoiceQuery, InvoiceStatus
from gateway.settings import Settings
from gateway.sources.stripe import StripeBilling
from tests.conftest import GatewayServer, running_gateway
from tests.fakes.stripe import FakeStripe, running_fake_stripe
from tests.sources.billing_behaviour import (
    ADA,
    HOME,
    BillingBehaviour,
    BillingEnv,
    link_customer,
)
from tests.webhooks.signing import STRIPE_SECRET, stripe_event, stripe_headers, stripe_invoice

API_KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
# Fast retries, so failure tests spend their time on behaviour rather than backoff; a
# breaker that only its own test opens.
FAST = {
    "retry_base_delay": 0.01,
    "retry_max_delay": 0.05,
    "upstream_timeout": 5.0,
    "breaker_failures": 50,
}


class StripeSeeder:
    """BillingProvider (tests/sources/billing_behaviour.py) for the fake Stripe."""

    def __init__(self, fake: FakeStripe) -> None:
        self.fake = fake

    def add_customer(self, *, email: str, name: str) -> str:
        return self.fake.add_customer(email=email, name=name)

    def add_invoice(
        self,
        billing_id: str,
        *,
        status: InvoiceStatus,
        total: int,
        currency: str,
        created: datetime,
        amount_paid: int = 0,
    ) -> str:
        return self.fake.add_invoice(
            billing_id,
            status=status.value.lower(),
            total=total,
            currency=currency,
            created=created,
            amount_paid=total if status is InvoiceStatus.PAID else amount_paid,
        )

    def add_subscription(
        self,
        billing_id: str,
        *,
        status: str,
        plan: str,
        current_period_end: datetime,
        cancel_at_period_end: bool,
    ) -> str:
        return self.fake.add_subscription(
            billing_id,
            status=status,
            plan=plan,
            current_period_end=current_period_end,
            cancel_at_period_end=cancel_at_period_end,
        )

    def fail(self, status: int = 500) -> None:
        self.fake.fail_all(status)

    def recover(self) -> None:
        self.fake.recover()


@pytest.fixture(scope="module")
def stripe_server() -> Iterator[FakeStripe]:
    with running_fake_stripe(API_KEY) as fake:
        yield fake


@pytest.fixture
def fake_stripe(stripe_server: FakeStripe) -> FakeStripe:
    """The module's fake Stripe, emptied for this test."""
    stripe_server.reset()
    return stripe_server


@pytest.fixture
def stripe_gateway(
    make_settings: Callable[..., Settings],
    redis_url: str,
    cache_prefix: str,
    fake_stripe: FakeStripe,
) -> Iterator[Callable[..., GatewayServer]]:
    """Start gateways with BILLING_SOURCE=stripe on the fake (keyword arguments: settings)."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> GatewayServer:
            values = {
                "billing_source": "stripe",
                "stripe_api_key": API_KEY,
                "stripe_api_base": fake_stripe.url,
                "redis_url": redis_url,
                "cache_prefix": cache_prefix,
                **FAST,
            }
            settings = make_settings(**{**values, **overrides})
            return stack.enter_context(running_gateway(settings))

        yield start


@pytest.fixture
def billing_env(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe
) -> BillingEnv:
    return BillingEnv(stripe_gateway(), StripeSeeder(fake_stripe), source="stripe")


class TestStripeBilling(BillingBehaviour):
    """The shared billing behaviour, on Stripe."""


# -- Stripe's own: one retry policy, error mapping, API version, portal, batching ------------


def _upstream(operation: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "gateway_upstream_requests_total",
        {"source": "stripe", "operation": operation, "outcome": outcome},
    )
    return value or 0.0


# the list alone: totalCount would add the count's search beside it (gateway.resolvers.pages)
LIST_ONLY = "{ me { invoices { edges { node { id } } } } }"


def _ada_with_an_invoice(server: GatewayServer, fake: FakeStripe) -> str:
    customer = fake.add_customer(email="ada@example.com")
    link_customer(server, ADA, customer)
    fake.add_invoice(customer, status="open", total=1234, currency="eur")
    return customer


def test_one_retry_policy_decides_not_the_sdks(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe
) -> None:
    server = stripe_gateway(retry_max_attempts=3)
    _ada_with_an_invoice(server, fake_stripe)
    before_ok = _upstream("invoices.list", "ok")
    before_failed = _upstream("invoices.list", "server_error")
    fake_stripe.fail_next(500, times=2, path="/v1/invoices")
    body = server.query(LIST_ONLY, token=server.token(ADA)).json()
    assert len(body["data"]["me"]["invoices"]["edges"]) == 1
    # two failures and the success: RETRY_MAX_ATTEMPTS in all, not multiplied by the SDK's
    assert len(fake_stripe.calls_to("GET", "/v1/invoices")) == 3
    assert _upstream("invoices.list", "server_error") - before_failed == 2
    assert _upstream("invoices.list", "ok") - before_ok == 1


def test_stripe_should_retry_false_stops_retries(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe
) -> None:
    server = stripe_gateway(retry_max_attempts=3)
    _ada_with_an_invoice(server, fake_stripe)
    fake_stripe.fail_next(500, times=3, headers={"Stripe-Should-Retry": "false"})
    body = server.query(LIST_ONLY, token=server.token(ADA)).json()
    [error] = body["errors"]
    assert error["extensions"]["code"] == "INTEGRATION_UNAVAILABLE"
    assert error["extensions"]["retryable"] is False
    assert len(fake_stripe.calls_to("GET", "/v1/invoices")) == 1


def test_rate_limited_by_stripe_honours_retry_after_then_says_when(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe
) -> None:
    server = stripe_gateway(retry_max_attempts=2)
    _ada_with_an_invoice(server, fake_stripe)
    fake_stripe.fail_next(429, times=2, headers={"Retry-After": "0.3"})
    started = time.monotonic()
    body = server.query(
        "{ me { name invoices { edges { node { id } } } } }", token=server.token(ADA)
    )
    assert time.monotonic() - started >= 0.3
    result = body.json()
    assert result["data"]["me"] == {"name": "Ada Lovelace", "invoices": None}
    [error] = result["errors"]
    assert error["extensions"]["code"] == "INTEGRATION_UNAVAILABLE"
    assert error["extensions"]["source"] == "stripe"
    assert error["extensions"]["retryAfter"] == pytest.approx(0.3)
    calls = fake_stripe.calls_to("GET", "/v1/invoices")
    assert len(calls) == 2
    assert calls[1].at - calls[0].at >= 0.3


@pytest.mark.parametrize(
    ("fault", "retryable"),
    [
        ({"status": 500}, True),
        ({"status": 503}, True),
        ({"status": 200, "malformed": True}, True),
        ({"status": 401}, False),
        ({"status": 403}, False),
    ],
    ids=["500", "503", "malformed-json", "401", "403"],
)
def test_stripe_failures_map_to_integration_unavailable_without_detail(
    stripe_gateway: Callable[..., GatewayServer],
    fake_stripe: FakeStripe,
    fault: dict[str, Any],
    retryable: bool,
) -> None:
    server = stripe_gateway(retry_max_attempts=1)
    _ada_with_an_invoice(server, fake_stripe)
    body = {"error": {"type": "api_error", "message": f"boom for {API_KEY}"}}
    fake_stripe.fail_all(**fault, **({} if fault.get("malformed") else {"body": body}))
    response = server.query(HOME, token=server.token(ADA))
    result = response.json()
    assert result["data"]["me"]["name"] == "Ada Lovelace"
    assert result["data"]["me"]["tickets"]["totalCount"] == 12
    assert result["data"]["me"]["invoices"] is None
    for error in result["errors"]:
        assert error["extensions"]["code"] == "INTEGRATION_UNAVAILABLE"
        assert error["extensions"]["source"] == "stripe"
        assert error["extensions"]["retryable"] is retryable
    assert API_KEY not in response.text
    assert "boom" not in response.text
    assert "sk_" not in response.text


def test_a_wrong_key_is_integration_unavailable_and_never_shown(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe
) -> None:
    server = stripe_gateway(stripe_api_key="sk_test_wrongwrongwrong")
    _ada_with_an_invoice(server, fake_stripe)
    response = server.query(LIST_ONLY, token=server.token(ADA))
    [error] = response.json()["errors"]
    assert error["extensions"] == {
        "code": "INTEGRATION_UNAVAILABLE",
        "source": "stripe",
        "retryable": False,
    }
    assert "wrong" not in response.text
    # a refused key is not an outage: no retry
    assert len(fake_stripe.calls_to("GET", "/v1/invoices")) == 1


def test_breaker_opens_and_readyz_says_so(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe
) -> None:
    server = stripe_gateway(retry_max_attempts=1, breaker_failures=2)
    _ada_with_an_invoice(server, fake_stripe)
    fake_stripe.fail_all(500)
    for _ in range(2):
        server.query("{ me { invoices { totalCount } } }", token=server.token(ADA))
    calls = len(fake_stripe.calls)
    body = server.query("{ me { invoices { totalCount } } }", token=server.token(ADA)).json()
    assert body["errors"][0]["extensions"]["code"] == "INTEGRATION_UNAVAILABLE"
    assert len(fake_stripe.calls) == calls  # failed fast, Stripe not called
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["providers"]["stripe"] == {"breaker": "open"}
    assert ready["status"] == "degraded"


def test_api_version_is_sent_and_both_subscription_shapes_read(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe, cache_prefix: str
) -> None:
    customer = fake_stripe.add_customer(email="ada@example.com")
    end = datetime(2027, 1, 31, 12, 0, tzinfo=UTC)
    fake_stripe.add_subscription(customer, plan="Team", current_period_end=end)
    query = "{ me { subscriptions { plan currentPeriodEnd } } }"
    for version in (None, "2023-08-16"):
        fake_stripe.reset_calls()
        server = stripe_gateway(
            stripe_api_version=version, cache_prefix=f"{cache_prefix}{version}:"
        )
        link_customer(server, ADA, customer)
        body = server.query(query, token=server.token(ADA)).json()
        [subscription] = body["data"]["me"]["subscriptions"]
        assert subscription["plan"] == "Team"
        assert datetime.fromisoformat(subscription["currentPeriodEnd"]) == end
        [call] = fake_stripe.calls_to("GET", "/v1/subscriptions")
        assert call.headers["stripe-version"] == (version or stripe.api_version)
        assert call.param("status") == "all"


def test_portal_session_posts_with_one_idempotency_key_across_retries(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe
) -> None:
    server = stripe_gateway(retry_max_attempts=3)
    customer = _ada_with_an_invoice(server, fake_stripe)
    fake_stripe.fail_next(500, path="/v1/billing_portal")
    mutation = """mutation($url: String!) {
        createBillingPortalSession(returnUrl: $url) { url expiresAt } }"""
    body = server.query(
        mutation, {"url": "https://portal.example.com/billing"}, token=server.token(ADA)
    ).json()
    assert "errors" not in body, body
    session = body["data"]["createBillingPortalSession"]
    assert session["url"].startswith("https://billing.stripe.com/p/session/")
    assert datetime.fromisoformat(session["expiresAt"]) > datetime.now(UTC)
    first, second = fake_stripe.calls_to("POST", "/v1/billing_portal/sessions")
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert second.param("customer") == customer
    assert second.param("return_url") == "https://portal.example.com/billing"
    # a new user action is a new key
    server.query(mutation, {"url": "https://portal.example.com/b"}, token=server.token(ADA))
    third = fake_stripe.calls_to("POST", "/v1/billing_portal/sessions")[-1]
    assert third.headers["idempotency-key"] != first.headers["idempotency-key"]


def test_portal_return_url_refused_by_stripe_is_bad_user_input(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe
) -> None:
    server = stripe_gateway()
    _ada_with_an_invoice(server, fake_stripe)
    refusal = {
        "error": {
            "type": "invalid_request_error",
            "param": "return_url",
            "message": f"Not a valid URL ({API_KEY})",
        }
    }
    fake_stripe.fail_next(400, body=refusal, path="/v1/billing_portal")
    response = server.query(
        'mutation { createBillingPortalSession(returnUrl: "https://x.example/") { url } }',
        token=server.token(ADA),
    )
    [error] = response.json()["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "returnUrl"}
    assert API_KEY not in response.text


def test_portal_session_without_billing_account_is_not_found(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe
) -> None:
    server = stripe_gateway()
    link_customer(server, ADA, "cus_gone")  # linked, but Stripe no longer has it
    response = server.query(
        'mutation { createBillingPortalSession(returnUrl: "https://x.example/") { url } }',
        token=server.token(ADA),
    )
    assert response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"


STAFF_50 = """query($ids: [ID!]!) { customers(ids: $ids) {
  id invoices(first: 5) { totalCount edges { node { id total currency status } } } } }"""


def test_fifty_customers_invoices_come_from_five_searches(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe
) -> None:
    server = stripe_gateway(rate_limit_stripe="100/1s")
    fake_stripe.latency = 0.02
    crm_ids = [str(1001 + n) for n in range(50)]
    for n, crm_id in enumerate(crm_ids):
        customer = fake_stripe.add_customer(email=f"c{n}@example.com")
        link_customer(server, crm_id, customer)
        for i in range(6):
            fake_stripe.add_invoice(customer, total=100 * n + i, created=1_700_000_000 + i)
    fake_stripe.reset_calls()
    staff = server.token(None, ["staff"])

    started = time.monotonic()
    body = server.query(STAFF_50, {"ids": crm_ids}, token=staff).json()
    cold = time.monotonic() - started
    assert "errors" not in body, body
    customers = body["data"]["customers"]
    assert [c["id"] for c in customers] == crm_ids
    assert all(len(c["invoices"]["edges"]) == 5 for c in customers)
    assert all(c["invoices"]["totalCount"] == 6 for c in customers)
    assert customers[7]["invoices"]["edges"][0]["node"]["total"] == 705
    calls = fake_stripe.calls
    # 50 customers, 10 clauses a query (Stripe's limit), 60 invoices: one page each
    assert len(calls) == 5
    assert {c.path for c in calls} == {"/v1/invoices/search"}
    clauses = [clause for c in calls for clause in (c.param("query") or "").split(" OR ")]
    assert sorted(clauses) == sorted(f"customer:'{c}'" for c in fake_stripe.customers)
    assert {c.param("limit") for c in calls} == {"100"}
    print(f"\nstaff-50 invoices: {len(calls)} Stripe calls, cold {cold * 1000:.0f} ms")

    fake_stripe.reset_calls()
    again = server.query(STAFF_50, {"ids": crm_ids}, token=staff).json()
    assert again == body
    assert fake_stripe.calls == []  # warm: answered from the cache


def test_search_pages_and_group_sizes_follow_what_was_seen(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe
) -> None:
    """Customers with more invoices than one page of 100 holds for ten: the search is paged
    through (next_page), and the next staff page puts fewer customers in each query."""
    server = stripe_gateway(rate_limit_stripe="100/1s")
    crm_ids = [str(1001 + n) for n in range(20)]
    for n, crm_id in enumerate(crm_ids):
        customer = fake_stripe.add_customer(email=f"c{n}@example.com")
        link_customer(server, crm_id, customer)
        for i in range(12):
            fake_stripe.add_invoice(customer, total=100 * n + i, created=1_700_000_000 + i)
    fake_stripe.reset_calls()
    staff = server.token(None, ["staff"])

    body = server.query(STAFF_50, {"ids": crm_ids}, token=staff).json()
    assert "errors" not in body, body
    assert all(c["invoices"]["totalCount"] == 12 for c in body["data"]["customers"])
    # two queries of 10 customers, 120 invoices each: two pages each
    assert len(fake_stripe.calls) == 4
    assert sum(1 for c in fake_stripe.calls if c.param("page")) == 2

    fake_stripe.reset_calls()
    other = STAFF_50.replace("first: 5", "first: 4")  # a page no cache holds yet
    body = server.query(other, {"ids": crm_ids}, token=staff).json()
    assert "errors" not in body, body
    assert all(len(c["invoices"]["edges"]) == 4 for c in body["data"]["customers"])
    # 12 invoices a customer seen: 8 customers a query fit one page (96)
    assert len(fake_stripe.calls) == 3
    assert not any(c.param("page") for c in fake_stripe.calls)


def test_a_webhook_shows_on_the_staff_page_at_once_while_the_search_lags(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe
) -> None:
    server = stripe_gateway(rate_limit_stripe="100/1s", stripe_webhook_secret=STRIPE_SECRET)
    crm_ids = [str(1001 + n) for n in range(6)]
    invoices = []
    for n, crm_id in enumerate(crm_ids):
        customer = fake_stripe.add_customer(email=f"c{n}@example.com")
        link_customer(server, crm_id, customer)
        invoices.append(fake_stripe.add_invoice(customer, status="open", total=100 + n))
    staff = server.token(None, ["staff"])
    before = server.query(STAFF_50, {"ids": crm_ids}, token=staff).json()
    assert "errors" not in before, before
    own = "{ me { invoices(first: 5) { edges { node { id status amountDue } } } } }"
    assert server.query(own, token=server.token(ADA)).json()["data"]["me"]["invoices"]

    # Ada pays; Stripe's search index does not show it yet, its lists and webhook do
    fake_stripe.freeze_search()
    fake_stripe.set_invoice_status(invoices[0], "paid")
    paid = stripe_invoice(invoices[0], fake_stripe.invoices[invoices[0]]["customer"], total=100)
    event = stripe_event("evt_staff_1", "invoice.paid", paid)
    answer = server.http.post("/webhooks/stripe", content=event, headers=stripe_headers(event))
    assert answer.status_code == 200

    mine = server.query(own, token=server.token(ADA)).json()["data"]["me"]["invoices"]
    assert mine["edges"][0]["node"] == {"id": invoices[0], "status": "PAID", "amountDue": 0}
    fake_stripe.reset_calls()
    after = server.query(STAFF_50, {"ids": crm_ids}, token=staff).json()
    assert "errors" not in after, after
    node = after["data"]["customers"][0]["invoices"]["edges"][0]["node"]
    assert node["id"] == invoices[0]
    assert node["status"] == "PAID"
    # Ada's page from her list; the other five, whose pages the webhook did not drop,
    # from the cache
    assert [c.path for c in fake_stripe.calls] == ["/v1/invoices"]
    assert fake_stripe.calls[0].param("customer") == fake_stripe.invoices[invoices[0]]["customer"]


async def test_adapter_batch_answers_each_key_on_its_own(fake_stripe: FakeStripe) -> None:
    """One customer's failure is its own key's exception; the others still answer."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, stripe_api_key=API_KEY, stripe_api_base=fake_stripe.url, **FAST
    )
    billing = StripeBilling(settings)
    try:
        known = fake_stripe.add_customer(email="a@example.com")
        fake_stripe.add_invoice(known, status="paid", total=500)
        invoice = fake_stripe.add_invoice(known, status="void", total=300)
        found = await billing.invoices([invoice, "in_unknown", "not/an/id"])
        assert [type(v).__name__ for v in found] == ["Invoice", "NoneType", "NoneType"]
        assert fake_stripe.calls_to("GET", "/v1/invoices/not") == []
        pages = await billing.invoice_pages([])
        assert pages == []
        emails = await billing.billing_ids_by_email(["a@example.com", "nobody@example.com"])
        assert emails == [known, None]
        fake_stripe.add_customer(email="a@example.com")  # a second customer, same email
        assert await billing.billing_ids_by_email(["a@example.com"]) == [None]
    finally:
        await billing.aclose()


async def test_the_sdks_request_lines_stay_out_of_the_log_unless_asked_for(
    fake_stripe: FakeStripe,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The SDK logs each request and answer (URLs with customer ids; at debug the whole
    answer body): the gateway's logging keeps the "stripe" logger at WARNING, so even
    LOG_LEVEL=DEBUG shows none of it, and the SDK prints nothing to stderr while neither
    stripe.log nor STRIPE_LOG asks it to. Setting the "stripe" logger's level on purpose
    shows them."""
    import io

    from gateway.observability import configure_logging

    monkeypatch.setattr(stripe, "log", None)  # STRIPE_LOG, read at import, is unset here
    customer = fake_stripe.add_customer(email="ada@example.com")
    fake_stripe.add_invoice(customer, status="open", total=1234)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, stripe_api_key=API_KEY, stripe_api_base=fake_stripe.url, **FAST
    )
    root = logging.getLogger()
    kept = (root.handlers[:], root.level)
    billing = StripeBilling(settings)
    try:
        stream = io.StringIO()
        configure_logging("DEBUG", stream=stream)
        [page] = await billing.invoice_pages([InvoiceQuery(billing_id=customer)])
        assert not isinstance(page, Exception)
        assert len(page.items) == 1
        assert "Stripe API" not in stream.getvalue()
        assert customer not in stream.getvalue()
        assert capsys.readouterr().err == ""

        logging.getLogger("stripe").setLevel(logging.DEBUG)
        await billing.invoice_pages([InvoiceQuery(billing_id=customer)])
        assert "Request to Stripe api" in stream.getvalue()
        assert "API response body" in stream.getvalue()
    finally:
        await billing.aclose()
        root.handlers[:], level = kept  # caplog's handler back
        root.setLevel(level)
        logging.getLogger("stripe").setLevel(logging.NOTSET)


@pytest.mark.parametrize("field", ["created", "due_date", "paid_at"])
def test_an_invoice_with_a_time_no_calendar_has_is_skipped_not_fatal(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe, field: str
) -> None:
    server = stripe_gateway()
    billing_id = fake_stripe.add_customer(email="ada@example.com", name="Ada")
    link_customer(server, ADA, billing_id)
    readable = fake_stripe.add_invoice(billing_id, created=datetime(2026, 1, 2, tzinfo=UTC))
    garbage = fake_stripe.add_invoice(billing_id, created=datetime(2026, 1, 3, tzinfo=UTC))
    # within 64 bits (a larger number reaches the adapter as a float, read as no time),
    # past year 9999
    if field == "paid_at":
        fake_stripe.invoices[garbage]["status_transitions"]["paid_at"] = 10**15
    else:
        fake_stripe.invoices[garbage][field] = 10**15
    answer = server.query("{ me { invoices { edges { node { id } } } } }", token=server.token(ADA))
    assert answer.status_code == 200
    body = answer.json()
    assert "errors" not in body
    ids = [edge["node"]["id"] for edge in body["data"]["me"]["invoices"]["edges"]]
    assert ids == [readable]


def test_total_count_of_a_longer_list_is_asked_beside_the_page(
    stripe_gateway: Callable[..., GatewayServer], fake_stripe: FakeStripe
) -> None:
    server = stripe_gateway()
    customer = _ada_with_an_invoice(server, fake_stripe)
    for n in range(4):
        fake_stripe.add_invoice(customer, status="paid", total=10 + n)
    fake_stripe.latency = 0.3
    query = "{ me { invoices(first: 2) { totalCount edges { node { id } } } } }"

    body = server.query(query, token=server.token(ADA)).json()

    assert body["data"]["me"]["invoices"]["totalCount"] == 5
    listed, counted = fake_stripe.calls_to("GET", "/v1/invoices")
    assert {listed.path, counted.path} == {"/v1/invoices", "/v1/invoices/search"}
    assert abs(listed.at - counted.at) < 0.25  # sent together, not one after the other
    search = counted if counted.path.endswith("search") else listed
    assert search.param("query") == f"customer:'{customer}'"
    # the total is cached like the list: a later page asks nothing more for it
    fake_stripe.latency = 0.0
    fake_stripe.reset_calls()
    after = body["data"]["me"]["invoices"]["edges"][-1]["node"]["id"]
    later = server.query(
        "query($after: String) { me { invoices(first: 2, after: $after) { totalCount } } }",
        {"after": after},
        token=server.token(ADA),
    ).json()
    assert later["data"]["me"]["invoices"]["totalCount"] == 5
    assert [c.path for c in fake_stripe.calls] == ["/v1/invoices"]
