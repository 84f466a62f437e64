"""The REST facade's worlds: one gateway on the sandbox, one on the HubSpot, Stripe and
Zendesk fakes (files stay on the local store). Each test that takes `world` runs in both.

A world knows two customers, `own` (the caller) and `other`, each with invoices, tickets and
documents, and finds their ids through /graphql: the REST answers are checked against what
the GraphQL endpoint says of the same data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.stripe import FakeStripe, running_fake_stripe
from tests.fakes.zendesk import FakeZendesk

FAST = {"retry_base_delay": 0.01, "retry_max_delay": 0.05, "upstream_timeout": 2.0}
HOLDINGS = """query { me { id
  invoices(first: 100) { totalCount edges { node { id status } } }
  tickets(first: 100) { totalCount edges { node { id status } } }
  files(first: 100) { totalCount edges { node { id name } } }
} }"""


@dataclass
class Holdings:
    """What one customer has, as /graphql reports it."""

    id: str
    token: str
    invoices: list[str]
    tickets: list[str]
    ticket_statuses: list[str]
    documents: list[str]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class World:
    name: str
    gateway: GatewayServer
    own: Holdings
    other: Holdings
    stripe: FakeStripe | None = None
    hubspot: FakeHubSpot | None = None
    zendesk: FakeZendesk | None = None

    @property
    def http(self) -> httpx.Client:
        return self.gateway.http

    def staff(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.gateway.token(None, ['staff'])}"}

    def holdings(self, customer_id: str) -> Holdings:
        return holdings(self.gateway, customer_id)


def holdings(gateway: GatewayServer, customer_id: str) -> Holdings:
    """What `customer_id` has, as /graphql says."""
    token = gateway.token(customer_id)
    answer = gateway.query(HOLDINGS, token=token).json()
    assert "errors" not in answer, answer
    me = answer["data"]["me"]

    def ids(kind: str) -> list[str]:
        return [e["node"]["id"] for e in me[kind]["edges"]]

    return Holdings(
        customer_id,
        token,
        ids("invoices"),
        ids("tickets"),
        [e["node"]["status"] for e in me["tickets"]["edges"]],
        ids("files"),
    )


@pytest.fixture(scope="module")
def provider_fakes() -> Iterator[tuple[FakeHubSpot, FakeStripe, FakeZendesk]]:
    with (
        FakeHubSpot().running() as hubspot,
        running_fake_stripe() as stripe,
        FakeZendesk().running() as zendesk,
    ):
        yield hubspot, stripe, zendesk


def _seed_person(
    hubspot: FakeHubSpot, stripe: FakeStripe, zendesk: FakeZendesk, n: int, name: str
) -> str:
    email = f"{name.lower()}@example.com"
    billing = stripe.add_customer(email=email, name=name)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(5):
        stripe.add_invoice(
            billing,
            status=("paid", "open")[i % 2],
            total=1000 * (i + 1),
            created=start + timedelta(days=10 * i),
            number=f"INV-{n}-{i}",
        )
    stripe.add_subscription(billing, plan="Pro (monthly)")
    user = zendesk.add_user(email, name)
    for i, status in enumerate(["open", "pending", "solved", "open"]):
        zendesk.add_ticket(user, f"Question {i} of {name}", status=status)
    return hubspot.add(
        firstname=name,
        lastname="Tester",
        email=email,
        phone=f"+1 555 010 {n:04d}",
        zendesk_user_id=user,
        stripe_customer_id=billing,
    )


@pytest.fixture(params=["sandbox", "providers"])
def world(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    redis_url: str,
    cache_prefix: str,
) -> Iterator[World]:
    """The gateway with its two customers, on the sandbox or on the providers' fakes."""
    if request.param == "sandbox":
        with running_gateway(make_settings()) as gateway:
            yield World("sandbox", gateway, holdings(gateway, "1001"), holdings(gateway, "1002"))
        return
    hubspot, stripe, zendesk = request.getfixturevalue("provider_fakes")
    hubspot.reset()
    stripe.reset()
    zendesk.reset()
    own = _seed_person(hubspot, stripe, zendesk, 1, "Grace")
    other = _seed_person(hubspot, stripe, zendesk, 2, "Alan")
    settings = make_settings(
        crm_source="hubspot",
        hubspot_api_base=hubspot.url,
        hubspot_access_token=hubspot.token,
        billing_source="stripe",
        stripe_api_key=stripe.api_key,
        stripe_api_base=stripe.url,
        helpdesk_source="zendesk",
        zendesk_base_url=zendesk.url,
        zendesk_email=zendesk.email,
        zendesk_api_token=zendesk.token,
        redis_url=redis_url,
        cache_prefix=cache_prefix,
        **FAST,
    )
    with running_gateway(settings) as gateway:
        gateway.sources.files.seed(
            {
                customer: [
                    (f"statement-{i}.txt", "text/plain", f"statement {i} of {customer}".encode())
                    for i in range(3)
                ]
                for customer in (own, other)
            }
        )
        yield World(
            "providers",
            gateway,
            holdings(gateway, own),
            holdings(gateway, other),
            stripe=stripe,
            hubspot=hubspot,
            zendesk=zendesk,
        )
