"""A page that does not wait for its slowest provider, as Apollo Client renders it
(js/apollo_defer.cjs): invoices in a @defer fragment, from a Stripe fake answering in
0.5 s, and a ticket list whose edges are @stream-ed; with both of Apollo Client's
incremental handlers (deferSpec=20220824 and graphql-js 17 alpha 9's format)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import running_gateway
from tests.e2e.node import Node
from tests.fakes.stripe import FakeStripe, running_fake_stripe
from tests.sources.billing_behaviour import link_customer

API_KEY = "sk_test_e2e_defer"


@pytest.fixture(scope="module")
def stripe() -> Iterator[FakeStripe]:
    with running_fake_stripe(API_KEY, latency=0.5) as fake:
        yield fake


@pytest.fixture(scope="module", params=["defer20220824", "graphql17Alpha9"])
def rendered(
    request: pytest.FixtureRequest,
    node: Node,
    stripe: FakeStripe,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(handler, what Apollo Client rendered with it), against a gateway of its own (its
    caches cold: the invoices come from Stripe, after the rest of the page)."""
    customer = stripe.add_customer(email="ada@example.com", name="Ada Lovelace")
    for total in (1200, 3400, 5600):
        stripe.add_invoice(customer, status="open", total=total)
    with running_gateway(
        tmp_path_factory.mktemp("files"),
        billing_source="stripe",
        stripe_api_key=API_KEY,
        stripe_api_base=stripe.url,
    ) as gateway:
        link_customer(gateway, "1001", customer)
        yield (
            request.param,
            node.run(
                "apollo_defer.cjs",
                GATEWAY_URL=gateway.url,
                TOKEN=gateway.token("1001"),
                HANDLER=request.param,
            ),
        )


def test_the_page_renders_before_its_invoices_then_with_them(
    rendered: tuple[str, dict[str, Any]],
) -> None:
    handler, report = rendered
    accept = {"defer20220824": "deferSpec=20220824", "graphql17Alpha9": "incrementalSpec=v0.2"}
    assert all(accept[handler] in sent for sent in report["accept"]), report["accept"]
    first, *_, last = report["page"]
    assert first["dataState"] == "streaming"
    me = first["data"]["me"]
    assert (me["id"], me["name"]) == ("1001", "Ada Lovelace")
    assert len(me["tickets"]["edges"]) == 3
    assert "invoices" not in me
    assert last["dataState"] == "complete"
    totals = sorted(e["node"]["total"] for e in last["data"]["me"]["invoices"]["edges"])
    assert totals == [1200, 3400, 5600]
    assert last["data"]["me"]["tickets"] == me["tickets"]
    # rendered without the invoices while Stripe took its 500 ms, then with them
    assert first["at"] < last["at"] - 300, (first["at"], last["at"])


def test_a_streamed_list_renders_its_first_items_then_all(
    rendered: tuple[str, dict[str, Any]],
) -> None:
    _handler, report = rendered
    renders = report["stream"]
    last = renders[-1]
    assert last["dataState"] == "complete"
    edges = last["data"]["me"]["tickets"]["edges"]
    assert len(edges) == 5
    assert all(edge["node"]["__typename"] == "Ticket" for edge in edges)
    assert len(renders[0]["data"]["me"]["tickets"]["edges"]) == 2
