"""POST /webhooks/{provider} on the running gateway (embedded default: memory cache, memory
bus consumed in process, log notifications): what a delivery changes, and what a refused one
does not."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
import pytest

from gateway.domain import DomainEvent
from gateway.events.live import LiveSubscription
from gateway.webhooks.stripe import StripeWebhook
from tests.conftest import GatewayServer
from tests.events.clients import INVOICE_UPDATED, TICKET_UPDATED, GraphQLSocket, wait_for
from tests.webhooks import signing
from tests.webhooks.conftest import published_total, webhooks_total

INVOICES = "{ me { invoices(first: 12) { edges { node { id status amountDue paidAt } } } } }"


def invoice_status(gateway: GatewayServer, invoice_id: str, customer: str = "1001") -> str:
    body = gateway.query(INVOICES, token=gateway.token(customer)).json()
    [node] = [
        e["node"] for e in body["data"]["me"]["invoices"]["edges"] if e["node"]["id"] == invoice_id
    ]
    return str(node["status"])


def stripe_post(gateway: GatewayServer, body: bytes, **signing_options: object) -> httpx.Response:
    return gateway.http.post(
        "/webhooks/stripe", content=body, headers=signing.stripe_headers(body, **signing_options)
    )


def sent_notifications(gateway: GatewayServer) -> list[str]:
    return [n.id for n in gateway.gateway.events.worker.notifier.sent]


async def test_stripe_invoice_paid_shows_at_once_reaches_the_subscriber_and_notifies(
    hooks: GatewayServer,
) -> None:
    assert invoice_status(hooks, "in_sbx0001002") == "OPEN"  # now cached (TTL 60 s)
    calls = hooks.sources.billing.calls["invoice_pages"]
    assert invoice_status(hooks, "in_sbx0001002") == "OPEN"
    assert hooks.sources.billing.calls["invoice_pages"] == calls  # served from the cache
    accepted = webhooks_total("stripe", "accepted")
    async with GraphQLSocket.open(hooks.url, hooks.token("1001")) as ws:
        await ws.subscribe("inv", INVOICE_UPDATED)
        response = stripe_post(hooks, signing.stripe_event("evt_paid_1"))
        assert (response.status_code, response.content) == (200, b"")
        payload = await ws.next_payload("inv")
    assert payload == {
        "data": {
            "invoiceUpdated": {
                "id": "in_sbx0001002",
                "status": "PAID",
                "amountDue": 0,
                "amountPaid": 2000,
                "source": "sandbox",
            }
        }
    }
    assert invoice_status(hooks, "in_sbx0001002") == "PAID"  # not after the TTL: now
    assert webhooks_total("stripe", "accepted") == accepted + 1
    wait_for(lambda: sent_notifications(hooks) == ["invoice_paid:in_sbx0001002"])


async def test_a_delivery_repeated_three_times_is_handled_once(hooks: GatewayServer) -> None:
    body = signing.stripe_event("evt_repeat")
    before = (
        webhooks_total("stripe", "accepted"),
        webhooks_total("stripe", "duplicate"),
        published_total("InvoicePaid"),
    )
    async with GraphQLSocket.open(hooks.url, hooks.token("1001")) as ws:
        await ws.subscribe("inv", INVOICE_UPDATED)
        for _ in range(3):
            assert stripe_post(hooks, body).status_code == 200
        await ws.next_payload("inv")
        await ws.assert_silent(0.3)
    assert (
        webhooks_total("stripe", "accepted"),
        webhooks_total("stripe", "duplicate"),
        published_total("InvoicePaid"),
    ) == (before[0] + 1, before[1] + 2, before[2] + 1)
    await asyncio.sleep(0.3)
    assert sent_notifications(hooks) == ["invoice_paid:in_sbx0001002"]


REJECTIONS: dict[str, Callable[[], tuple[bytes, dict[str, str]]]] = {
    "forged signature": lambda: (
        signing.stripe_event("evt_forged"),
        signing.stripe_headers(signing.stripe_event("evt_forged"), secret="whsec_guess"),
    ),
    "stale timestamp": lambda: (
        signing.stripe_event("evt_old"),
        signing.stripe_headers(signing.stripe_event("evt_old"), at=int(time.time()) - 600),
    ),
    "oversized body": lambda: (
        b'{"pad": "' + b"x" * 1_048_576 + b'"}',
        signing.stripe_headers(b'{"pad": "' + b"x" * 1_048_576 + b'"}'),
    ),
    "malformed JSON": lambda: (
        b'{"id": "evt_bad", "type": "invoice.paid", ',
        signing.stripe_headers(b'{"id": "evt_bad", "type": "invoice.paid", '),
    ),
}
EXPECTED = {
    "forged signature": (400, "invalid_signature"),
    "stale timestamp": (400, "invalid_signature"),
    "oversized body": (413, "bad_request"),
    "malformed JSON": (400, "bad_request"),
}


async def test_refused_deliveries_invalidate_and_publish_nothing(hooks: GatewayServer) -> None:
    assert invoice_status(hooks, "in_sbx0001002") == "OPEN"
    calls = hooks.sources.billing.calls["invoice_pages"]
    published = published_total()
    async with GraphQLSocket.open(hooks.url, hooks.token("1001")) as ws:
        await ws.subscribe("inv", INVOICE_UPDATED)
        for case, make in REJECTIONS.items():
            status, outcome = EXPECTED[case]
            counted = webhooks_total("stripe", outcome)
            body, headers = make()
            response = hooks.http.post("/webhooks/stripe", content=body, headers=headers)
            assert response.status_code == status, case
            assert "error" in response.json()
            assert webhooks_total("stripe", outcome) == counted + 1, case
        await ws.assert_silent(0.2)
    assert published_total() == published
    assert invoice_status(hooks, "in_sbx0001002") == "OPEN"
    assert hooks.sources.billing.calls["invoice_pages"] == calls  # the cached page stayed
    assert sent_notifications(hooks) == []


def test_xero_intent_to_receive(hooks: GatewayServer) -> None:
    empty = signing.xero_events()
    good = hooks.http.post("/webhooks/xero", content=empty, headers=signing.xero_headers(empty))
    assert (good.status_code, good.content) == (200, b"")
    bad_headers = signing.xero_headers(empty, key="not-the-key")
    bad = hooks.http.post("/webhooks/xero", content=empty, headers=bad_headers)
    assert (bad.status_code, bad.content) == (401, b"")
    unsigned = hooks.http.post("/webhooks/xero", content=empty)
    assert unsigned.status_code == 401


def test_unknown_and_unconfigured_providers_are_not_found(
    start_gateway: Callable[..., GatewayServer],
) -> None:
    bare = start_gateway(stripe_webhook_secret=None)
    body = signing.stripe_event()
    assert bare.http.post("/webhooks/stripe", content=body).status_code == 404
    assert bare.http.post("/webhooks/paypal", content=body).status_code == 404
    assert bare.http.get("/webhooks/xero").status_code == 405


def test_hubspot_behind_a_proxy_is_verified_against_the_public_url(
    start_gateway: Callable[..., GatewayServer],
) -> None:
    gateway = start_gateway(public_base_url="https://portal.example.com/")
    token = gateway.token("1001")
    assert gateway.query("{ me { name } }", token=token).json()["data"]["me"]["name"]
    crm_calls = gateway.sources.crm.calls["customers"]
    body = signing.hubspot_events((501, "contact.propertyChange", "1001"))
    public = "https://portal.example.com/webhooks/hubspot?src=hs"
    headers = signing.hubspot_headers("POST", public, body)
    local = gateway.http.post(
        "/webhooks/hubspot?src=hs",
        content=body,
        headers=signing.hubspot_headers("POST", f"{gateway.url}/webhooks/hubspot?src=hs", body),
    )
    assert local.status_code == 400  # signed for another URL than the public one
    assert (
        gateway.http.post("/webhooks/hubspot?src=hs", content=body, headers=headers).status_code
        == 200
    )
    gateway.query("{ me { name } }", token=token)
    assert gateway.sources.crm.calls["customers"] == crm_calls + 1  # the customer was refetched


async def test_zendesk_agent_reply_updates_the_ticket_live_and_notifies_the_requester(
    hooks: GatewayServer,
) -> None:
    reply = {"comment": {"is_public": True, "author": {"id": "42", "is_staff": True}}}
    body = signing.zendesk_event(
        "01HZ-reply", "zen:event-type:ticket.comment_added", status="PENDING", change=reply
    )
    query = '{ ticket(id: "10000") { status } }'
    token = hooks.token("1001")
    assert hooks.query(query, token=token).json()["data"]["ticket"]["status"] == "OPEN"
    async with (
        GraphQLSocket.open(hooks.url, token) as mine,
        GraphQLSocket.open(hooks.url, hooks.token("1002")) as other,
    ):
        await mine.subscribe("t", TICKET_UPDATED)
        await other.subscribe("t", TICKET_UPDATED)
        headers = signing.zendesk_headers(body)
        assert (
            hooks.http.post("/webhooks/zendesk", content=body, headers=headers).status_code == 200
        )
        payload = await mine.next_payload("t")
        assert payload["data"]["ticketUpdated"]["status"] == "PENDING"
        await other.assert_silent(0.2)
    assert hooks.query(query, token=token).json()["data"]["ticket"]["status"] == "PENDING"
    wait_for(lambda: sent_notifications(hooks) == ["ticket_answered:zendesk:01HZ-reply"])


async def test_thin_quickbooks_and_xero_events_are_completed_from_the_billing_source(
    hooks: GatewayServer,
) -> None:
    paid_before = published_total("InvoicePaid")
    async with GraphQLSocket.open(hooks.url, hooks.token("1001")) as ws:
        await ws.subscribe("inv", INVOICE_UPDATED)
        body = signing.quickbooks_events("in_sbx0001002")
        headers = signing.quickbooks_headers(body)
        assert (
            hooks.http.post("/webhooks/quickbooks", content=body, headers=headers).status_code
            == 200
        )
        payload = await ws.next_payload("inv")
        assert payload["data"]["invoiceUpdated"]["id"] == "in_sbx0001002"
        assert payload["data"]["invoiceUpdated"]["status"] == "OPEN"
        # an update that finds the invoice paid is a payment: InvoicePaid, a confirmation
        body = signing.xero_events("in_sbx0001001")
        headers = signing.xero_headers(body)
        assert hooks.http.post("/webhooks/xero", content=body, headers=headers).status_code == 200
        payload = await ws.next_payload("inv")
        assert payload["data"]["invoiceUpdated"]["status"] == "PAID"
    assert published_total("InvoicePaid") == paid_before + 1
    wait_for(lambda: sent_notifications(hooks) == ["invoice_paid:in_sbx0001001"])


def test_a_delivery_that_failed_is_handled_when_redelivered(
    start_gateway: Callable[..., GatewayServer],
) -> None:
    gateway = start_gateway(sandbox_fail=["billing"])
    body = signing.quickbooks_events("in_sbx0001003")
    headers = signing.quickbooks_headers(body)
    errors, accepted = (
        webhooks_total("quickbooks", "error"),
        webhooks_total("quickbooks", "accepted"),
    )
    failed = gateway.http.post("/webhooks/quickbooks", content=body, headers=headers)
    assert failed.status_code == 500  # the provider retries later
    gateway.sources.billing.fail = False  # the provider is back
    retried = gateway.http.post("/webhooks/quickbooks", content=body, headers=headers)
    assert retried.status_code == 200
    assert webhooks_total("quickbooks", "error") == errors + 1
    assert webhooks_total("quickbooks", "accepted") == accepted + 1  # not a "duplicate"


def test_an_upload_publishes_file_uploaded(hooks: GatewayServer) -> None:
    subscription: LiveSubscription = hooks.gateway.events.live.listen("1001")
    token = hooks.token("1001")
    form = hooks.query(
        """mutation($input: FileUploadInput!) { requestFileUpload(input: $input) {
        url fields { name value } } }""",
        {"input": {"name": "receipt.txt", "contentType": "text/plain", "size": 5}},
        token=token,
    ).json()["data"]["requestFileUpload"]
    fields = {f["name"]: f["value"] for f in form["fields"]}
    posted = httpx.post(
        form["url"], data=fields, files={"file": ("receipt.txt", b"hello", "text/plain")}
    )
    assert posted.status_code == 201
    event = hooks.server.call(asyncio.wait_for(subscription.__anext__(), 5))
    assert type(event).__name__ == "FileUploaded"
    assert (event.customer_id, event.file.name, event.file.size) == ("1001", "receipt.txt", 5)
    hooks.server.call(subscription.aclose())


class _BuggyStripe(StripeWebhook):
    """A reader that lets something through it should have refused: no real delivery
    reaches this path, so it is put in place of the real one."""

    def parse(self, body: bytes) -> list[DomainEvent]:
        raise OverflowError("timestamp out of range for platform time_t")


def test_a_reader_that_fails_on_a_signed_body_answers_400_and_logs_the_bug(
    hooks: GatewayServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        hooks.gateway.webhooks.providers, "stripe", _BuggyStripe(signing.STRIPE_SECRET)
    )
    bad_requests, errors = (
        webhooks_total("stripe", "bad_request"),
        webhooks_total("stripe", "error"),
    )
    with caplog.at_level(logging.INFO, logger="gateway.webhooks"):
        response = stripe_post(hooks, signing.stripe_event("evt_buggy"))
    # parsing reads the body alone: a retry would fail the same way, so no 500
    assert (response.status_code, response.json()) == (
        400,
        {"error": "the payload is not understood"},
    )
    assert webhooks_total("stripe", "bad_request") == bad_requests + 1
    assert webhooks_total("stripe", "error") == errors
    [logged] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged.getMessage() == "webhook payload not understood"
    assert logged.exc_info is not None
    assert logged.exc_info[0] is OverflowError
