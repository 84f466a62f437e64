"""What every billing adapter must do, written once and run against each (DESIGN 6, 7, 11).

Plugging an adapter in — one fixture and one empty subclass in your test module:

    import pytest
    from tests.conftest import running_gateway
    from tests.sources.billing_behaviour import BillingBehaviour, BillingEnv

    @pytest.fixture
    def billing_env(make_settings, redis_url, cache_prefix):
        with running_fake_quickbooks() as fake:                  # your fake provider
            settings = make_settings(billing_source="quickbooks", ..., # pointed at it
                                     redis_url=redis_url, cache_prefix=cache_prefix)
            with running_gateway(settings) as gateway:
                yield BillingEnv(gateway, QuickBooksSeeder(fake), source="quickbooks")

    class TestQuickBooksBilling(BillingBehaviour):
        pass

The gateway runs everything else on the sandbox (CRM, help desk, files), so the suite links
sandbox CRM customers to the billing customers it seeds. `BillingEnv.provider` seeds your
fake in domain terms (the `BillingProvider` protocol below) and switches it to failing.
Set `subscriptions=False` on the env for a provider without subscriptions; those tests are
then skipped. Settings should make retries fast (RETRY_BASE_DELAY=0.01) and the breaker
patient (BREAKER_FAILURES=50), so the failure test neither waits on backoff nor finds the
breaker open when the provider has recovered.

Rules the suite holds every adapter to: amounts in minor units of the invoice's currency
(lower case), `amountDue` what is owed now (0 for draft, paid and void), newest invoice
first, `totalCount` the number of invoices (of the asked status) on every page, cursors that
page through every invoice exactly once, a staff page of many customers showing each
exactly what the customer's own page shows (whatever path the adapter reads it by),
NOT_FOUND for another customer's invoice, and a failing provider costing only the billing
fields, named by `extensions.source` (and, asked in a @defer fragment, only that part).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import msgspec
import pytest

from gateway.domain import InvoiceStatus
from tests.conftest import GatewayServer
from tests.multipart import post_for_parts

__all__ = [
    "ADA",
    "ALAN",
    "GRACE",
    "HOME",
    "INVOICE",
    "INVOICE_FIELDS",
    "KATHERINE",
    "PAGE",
    "BillingBehaviour",
    "BillingEnv",
    "BillingProvider",
    "link_customer",
]

# The sandbox CRM's customers the suite uses (gateway/sources/sandbox.py demo data).
ADA, GRACE, ALAN, KATHERINE = "1001", "1002", "1003", "1004"
_BASE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class BillingProvider(Protocol):
    """Seeds a fake billing provider in domain terms; every method answers the new id."""

    def add_customer(self, *, email: str, name: str) -> str:
        """A billing customer; answers its billing id."""
        ...

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
        """An invoice; `total` and `amount_paid` in minor units. For PAID, amount_paid is
        the total whatever is passed; for the rest, what remains is total - amount_paid,
        as the provider itself would record it (a void invoice keeps its remainder)."""
        ...

    def add_subscription(
        self,
        billing_id: str,
        *,
        status: str,
        plan: str,
        current_period_end: datetime,
        cancel_at_period_end: bool,
    ) -> str: ...

    def fail(self, status: int = 500) -> None:
        """Every call answers `status` until recover()."""
        ...

    def recover(self) -> None: ...


@dataclass
class BillingEnv:
    server: GatewayServer  # the gateway, BILLING_SOURCE = the adapter under test
    provider: BillingProvider
    source: str  # what extensions.source says for this provider ("stripe", ...)
    subscriptions: bool = True


def link_customer(server: GatewayServer, crm_id: str, billing_id: str | None) -> None:
    """Set the sandbox CRM's billing link of a customer (None: no link, found by email)."""
    data = server.sources.crm.data
    data.customers[crm_id] = msgspec.structs.replace(data.customers[crm_id], billing_id=billing_id)


INVOICE_FIELDS = """id number status currency total amountDue amountPaid createdAt dueDate
    paidAt hostedUrl pdfUrl source customer { id }"""

HOME = f"""{{ me {{
  name
  invoices(first: 20) {{
    totalCount
    edges {{ cursor node {{ {INVOICE_FIELDS} }} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
  subscriptions {{ id status plan currentPeriodEnd cancelAtPeriodEnd }}
  tickets(first: 3) {{ totalCount }}
  files(first: 3) {{ totalCount }}
}} }}"""

PAGE = """query($after: String, $status: InvoiceStatus) { me {
  invoices(first: 2, after: $after, status: $status) {
    totalCount edges { cursor node { id status createdAt } } pageInfo { hasNextPage endCursor }
  } } }"""

INVOICE = f"query($id: ID!) {{ invoice(id: $id) {{ {INVOICE_FIELDS} }} }}"

STAFF = """query($ids: [ID!]!) { customers(ids: $ids) { id
  invoices(first: 3) {
    totalCount edges { cursor node { id status total amountDue createdAt } }
    pageInfo { hasNextPage endCursor }
  } } }"""
OWN = """query($after: String) { me { id
  invoices(first: 3, after: $after) {
    totalCount edges { cursor node { id status total amountDue createdAt } }
    pageInfo { hasNextPage endCursor }
  } } }"""
NEXT = """query($id: ID!, $after: String) { customer(id: $id) { id
  invoices(first: 3, after: $after) {
    totalCount edges { cursor node { id status total amountDue createdAt } }
    pageInfo { hasNextPage endCursor }
  } } }"""
# Sandbox CRM customers for the staff page: more than the handful from which adapters may
# read a search index (SEARCH_FROM).
STAFF_CUSTOMERS = [str(1001 + n) for n in range(8)]

# What Ada's five invoices are seeded as, newest first, and what the gateway must show.
_ADA_INVOICES: list[dict[str, Any]] = [
    {"status": InvoiceStatus.UNCOLLECTIBLE, "total": 4500, "paid": 0, "due": 4500},
    {"status": InvoiceStatus.VOID, "total": 3000, "paid": 0, "due": 0},
    {"status": InvoiceStatus.DRAFT, "total": 700, "paid": 0, "due": 0},
    {"status": InvoiceStatus.PAID, "total": 5000, "paid": 5000, "due": 0},
    {"status": InvoiceStatus.OPEN, "total": 12000, "paid": 2000, "due": 10000},
]


class BillingBehaviour:
    """Subclass as `Test<Provider>Billing` in a module that defines a `billing_env` fixture."""

    @pytest.fixture
    def seeded(self, billing_env: BillingEnv) -> dict[str, Any]:
        """Ada with an invoice in every status (EUR) and two subscriptions; Grace with one
        invoice of her own. Answers the ids."""
        provider = billing_env.provider
        ada = provider.add_customer(email="ada@example.com", name="Ada Lovelace")
        grace = provider.add_customer(email="grace@example.com", name="Grace Hopper")
        link_customer(billing_env.server, ADA, ada)
        link_customer(billing_env.server, GRACE, grace)
        ids = []
        for age, spec in enumerate(_ADA_INVOICES):
            ids.append(
                provider.add_invoice(
                    ada,
                    status=spec["status"],
                    total=spec["total"],
                    currency="eur",
                    created=_BASE - timedelta(days=30 * age),
                    amount_paid=spec["paid"],
                )
            )
        subscriptions = []
        if billing_env.subscriptions:
            subscriptions = [
                provider.add_subscription(
                    ada,
                    status="active",
                    plan="Pro",
                    current_period_end=_BASE + timedelta(days=20),
                    cancel_at_period_end=False,
                ),
                provider.add_subscription(
                    ada,
                    status="canceled",
                    plan="Starter",
                    current_period_end=_BASE - timedelta(days=40),
                    cancel_at_period_end=True,
                ),
            ]
        grace_invoice = provider.add_invoice(
            grace, status=InvoiceStatus.OPEN, total=999, currency="usd", created=_BASE
        )
        return {
            "ada": ada,
            "invoices": ids,
            "subscriptions": subscriptions,
            "grace_invoice": grace_invoice,
        }

    def test_invoices_in_every_status_with_amounts_and_currency(
        self, billing_env: BillingEnv, seeded: dict[str, Any]
    ) -> None:
        server = billing_env.server
        body = server.query(HOME, token=server.token(ADA)).json()
        assert "errors" not in body, body
        invoices = body["data"]["me"]["invoices"]
        assert invoices["totalCount"] == 5
        assert invoices["pageInfo"]["hasNextPage"] is False
        nodes = [edge["node"] for edge in invoices["edges"]]
        assert [node["id"] for node in nodes] == seeded["invoices"]  # newest first
        for node, spec in zip(nodes, _ADA_INVOICES, strict=True):
            assert node["status"] == spec["status"].value
            assert node["currency"] == "eur"
            assert node["total"] == spec["total"]
            assert node["amountPaid"] == spec["paid"]
            assert node["amountDue"] == spec["due"], node
            assert node["source"] == billing_env.source
            assert node["customer"] == {"id": ADA}
            assert datetime.fromisoformat(node["createdAt"]).tzinfo is not None
            assert (node["paidAt"] is not None) == (spec["status"] is InvoiceStatus.PAID)
        created = [datetime.fromisoformat(node["createdAt"]) for node in nodes]
        assert created == sorted(created, reverse=True)

    def test_cursors_page_through_every_invoice_once(
        self, billing_env: BillingEnv, seeded: dict[str, Any]
    ) -> None:
        server = billing_env.server
        token = server.token(ADA)
        seen: list[str] = []
        after = None
        for _ in range(5):
            page = server.query(PAGE, {"after": after}, token=token).json()
            assert "errors" not in page, page
            invoices = page["data"]["me"]["invoices"]
            assert len(invoices["edges"]) <= 2
            seen += [edge["node"]["id"] for edge in invoices["edges"]]
            if not invoices["pageInfo"]["hasNextPage"]:
                break
            after = invoices["pageInfo"]["endCursor"]
            assert invoices["edges"][-1]["cursor"] == after
        assert seen == seeded["invoices"]

    def test_status_filter(self, billing_env: BillingEnv, seeded: dict[str, Any]) -> None:
        server = billing_env.server
        token = server.token(ADA)
        for status in InvoiceStatus:
            body = server.query(PAGE, {"status": status.value}, token=token).json()
            edges = body["data"]["me"]["invoices"]["edges"]
            assert [edge["node"]["status"] for edge in edges] == [status.value], status

    def test_a_cursor_from_nowhere_is_bad_user_input(
        self, billing_env: BillingEnv, seeded: dict[str, Any]
    ) -> None:
        server = billing_env.server
        body = server.query(PAGE, {"after": "not a cursor/.."}, token=server.token(ADA)).json()
        [error] = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["extensions"]["field"] == "after"

    def test_invoice_by_id_only_for_its_customer(
        self, billing_env: BillingEnv, seeded: dict[str, Any]
    ) -> None:
        server = billing_env.server
        own_id = seeded["invoices"][4]
        own = server.query(INVOICE, {"id": own_id}, token=server.token(ADA)).json()
        assert "errors" not in own, own
        assert own["data"]["invoice"]["id"] == own_id
        assert own["data"]["invoice"]["amountDue"] == 10000
        assert own["data"]["invoice"]["customer"] == {"id": ADA}
        for other in (seeded["grace_invoice"], "in_doesnotexist000", "../../v1/customers"):
            body = server.query(INVOICE, {"id": other}, token=server.token(ADA)).json()
            assert body["data"] == {"invoice": None}
            assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND", other
        grace = server.query(
            INVOICE, {"id": seeded["grace_invoice"]}, token=server.token(GRACE)
        ).json()
        assert grace["data"]["invoice"]["total"] == 999
        staff = server.query(INVOICE, {"id": own_id}, token=server.token(None, ["staff"])).json()
        assert staff["data"]["invoice"]["customer"] == {"id": ADA}

    def test_subscriptions_of_every_status(
        self, billing_env: BillingEnv, seeded: dict[str, Any]
    ) -> None:
        if not billing_env.subscriptions:
            pytest.skip("this provider has no subscriptions")
        server = billing_env.server
        body = server.query(HOME, token=server.token(ADA)).json()
        subscriptions = {s["id"]: s for s in body["data"]["me"]["subscriptions"]}
        active, canceled = (subscriptions[i] for i in seeded["subscriptions"])
        assert active["status"] == "active"
        assert active["plan"] == "Pro"
        assert active["cancelAtPeriodEnd"] is False
        assert datetime.fromisoformat(active["currentPeriodEnd"]) == _BASE + timedelta(days=20)
        assert canceled["status"] == "canceled"
        assert canceled["cancelAtPeriodEnd"] is True

    def test_missing_link_is_found_by_email(self, billing_env: BillingEnv) -> None:
        server = billing_env.server
        alan = billing_env.provider.add_customer(email="alan@example.com", name="Alan Turing")
        invoice = billing_env.provider.add_invoice(
            alan, status=InvoiceStatus.OPEN, total=2500, currency="gbp", created=_BASE
        )
        link_customer(server, ALAN, None)
        body = server.query(HOME, token=server.token(ALAN)).json()
        assert "errors" not in body, body
        edges = body["data"]["me"]["invoices"]["edges"]
        assert [(e["node"]["id"], e["node"]["currency"]) for e in edges] == [(invoice, "gbp")]
        # the link now answers ownership too
        own = server.query(INVOICE, {"id": invoice}, token=server.token(ALAN)).json()
        assert own["data"]["invoice"]["customer"] == {"id": ALAN}

    def test_customer_without_billing_account_has_none(self, billing_env: BillingEnv) -> None:
        server = billing_env.server
        link_customer(server, KATHERINE, None)  # and no billing customer with her email
        body = server.query(HOME, token=server.token(KATHERINE)).json()
        assert "errors" not in body, body
        me = body["data"]["me"]
        assert me["invoices"]["edges"] == []
        assert me["subscriptions"] == []

    def test_zero_decimal_currency_keeps_its_minor_units(self, billing_env: BillingEnv) -> None:
        server = billing_env.server
        billing_id = billing_env.provider.add_customer(email="yen@example.com", name="Yen")
        billing_env.provider.add_invoice(
            billing_id, status=InvoiceStatus.OPEN, total=5000, currency="jpy", created=_BASE
        )
        link_customer(server, KATHERINE, billing_id)
        body = server.query(HOME, token=server.token(KATHERINE)).json()
        [edge] = body["data"]["me"]["invoices"]["edges"]
        assert (edge["node"]["currency"], edge["node"]["total"]) == ("jpy", 5000)
        assert edge["node"]["amountDue"] == 5000

    def test_failing_provider_costs_only_the_billing_fields(
        self, billing_env: BillingEnv, seeded: dict[str, Any]
    ) -> None:
        server = billing_env.server
        billing_env.provider.fail(500)
        response = server.query(HOME, token=server.token(ADA))
        assert response.status_code == 200
        body = response.json()
        me = body["data"]["me"]
        assert me["name"] == "Ada Lovelace"
        assert me["tickets"]["totalCount"] == 12
        assert me["files"]["totalCount"] == 10
        assert me["invoices"] is None
        errors = {tuple(error["path"]): error for error in body["errors"]}
        expected = {("me", "invoices")}
        if billing_env.subscriptions:
            expected.add(("me", "subscriptions"))
            assert me["subscriptions"] is None
        assert set(errors) == expected
        for error in errors.values():
            assert error["extensions"]["code"] == "INTEGRATION_UNAVAILABLE"
            assert error["extensions"]["source"] == billing_env.source
            assert error["extensions"]["retryable"] is True
            assert billing_env.source in error["message"]

        billing_env.provider.recover()
        # the next request asks the provider again (a failure is never cached)
        body = server.query(HOME, token=server.token(ADA)).json()
        assert "errors" not in body, body
        assert body["data"]["me"]["invoices"]["totalCount"] == 5

    def test_a_failing_provider_costs_only_its_deferred_part(
        self, billing_env: BillingEnv, seeded: dict[str, Any]
    ) -> None:
        server = billing_env.server
        billing_env.provider.fail(500)
        query = """{ me { name tickets(first: 3) { totalCount }
          ... @defer { invoices(first: 5) { totalCount } } } }"""
        _response, parts = post_for_parts(server.http, query, server.token(ADA))
        first, *rest = (part.payload for part in parts)
        assert "errors" not in first
        assert first["data"]["me"] == {"name": "Ada Lovelace", "tickets": {"totalCount": 12}}
        (part,) = [entry for payload in rest for entry in payload.get("incremental", ())]
        assert part["data"] == {"invoices": None}
        (error,) = part["errors"]
        assert error["path"] == ["me", "invoices"]
        assert error["extensions"]["code"] == "INTEGRATION_UNAVAILABLE"
        assert error["extensions"]["source"] == billing_env.source
        billing_env.provider.recover()

    def test_total_count_on_every_page_and_status(
        self, billing_env: BillingEnv, seeded: dict[str, Any]
    ) -> None:
        server = billing_env.server
        token = server.token(ADA)
        first = server.query(PAGE, token=token).json()
        assert "errors" not in first, first
        assert first["data"]["me"]["invoices"]["totalCount"] == 5
        after = first["data"]["me"]["invoices"]["pageInfo"]["endCursor"]
        second = server.query(PAGE, {"after": after}, token=token).json()
        assert "errors" not in second, second
        assert len(second["data"]["me"]["invoices"]["edges"]) == 2
        assert second["data"]["me"]["invoices"]["totalCount"] == 5
        paid = server.query(PAGE, {"status": "PAID"}, token=token).json()
        assert paid["data"]["me"]["invoices"]["totalCount"] == 1
        # and for staff, on a later page of one customer
        staff = server.token(None, ["staff"])
        later = server.query(NEXT, {"id": ADA, "after": after}, token=staff).json()
        assert "errors" not in later, later
        assert later["data"]["customer"]["invoices"]["totalCount"] == 5

    def test_a_staff_page_shows_each_customer_what_their_own_page_shows(
        self, billing_env: BillingEnv
    ) -> None:
        server = billing_env.server
        provider = billing_env.provider
        for n, crm_id in enumerate(STAFF_CUSTOMERS):
            billing_id = provider.add_customer(email=f"staff{n}@example.com", name=f"C{n}")
            link_customer(server, crm_id, billing_id)
            statuses = [InvoiceStatus.OPEN, InvoiceStatus.PAID, InvoiceStatus.VOID]
            for i in range(n % 6):  # 0 to 5 invoices: some fit one page of 3, some do not
                provider.add_invoice(
                    billing_id,
                    status=statuses[i % 3],
                    total=100 * n + i,
                    currency="usd",
                    created=_BASE - timedelta(days=n + 3 * i),
                )
        staff = server.token(None, ["staff"])
        body = server.query(STAFF, {"ids": STAFF_CUSTOMERS}, token=staff).json()
        assert "errors" not in body, body
        shown = {c["id"]: c["invoices"] for c in body["data"]["customers"]}
        for n, crm_id in enumerate(STAFF_CUSTOMERS):
            own = server.query(OWN, token=server.token(crm_id)).json()
            assert "errors" not in own, own
            assert shown[crm_id] == own["data"]["me"]["invoices"], crm_id
            assert shown[crm_id]["totalCount"] == n % 6
            if not shown[crm_id]["pageInfo"]["hasNextPage"]:
                continue
            # the staff page's cursor reads the same next page as the customer's own
            after = shown[crm_id]["pageInfo"]["endCursor"]
            later = server.query(NEXT, {"id": crm_id, "after": after}, token=staff).json()
            own_later = server.query(OWN, {"after": after}, token=server.token(crm_id)).json()
            assert "errors" not in later, later
            assert later["data"]["customer"]["invoices"] == own_later["data"]["me"]["invoices"]
            assert len(later["data"]["customer"]["invoices"]["edges"]) == n % 6 - 3
