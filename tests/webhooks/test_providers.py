"""Each provider's signature scheme and payload mapping, on the raw bytes it sends."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain import (
    CustomerDeleted,
    CustomerUpdated,
    InvoicePaid,
    InvoiceStatus,
    InvoiceUpdated,
    TicketStatus,
    TicketUpdated,
)
from gateway.webhooks.hubspot import HubSpotWebhook, signed_uri
from gateway.webhooks.provider import BadPayload, Incoming, InvalidSignature
from gateway.webhooks.quickbooks import QuickBooksWebhook
from gateway.webhooks.stripe import StripeWebhook
from gateway.webhooks.xero import XeroWebhook
from gateway.webhooks.zendesk import ZendeskWebhook
from tests.webhooks import signing

URL = "https://portal.example.com/webhooks/x"


def incoming(body: bytes, headers: dict[str, str], url: str = URL) -> Incoming:
    return Incoming("POST", url, {k.lower(): v for k, v in headers.items()}, body, time.time())


# -- Stripe ---------------------------------------------------------------------------------

STRIPE = StripeWebhook(signing.STRIPE_SECRET, tolerance=300)


def test_stripe_accepts_its_signature_among_several_v1_values() -> None:
    body = signing.stripe_event()
    STRIPE.verify(incoming(body, signing.stripe_headers(body)))
    STRIPE.verify(incoming(body, signing.stripe_headers(body, extra_v1=2)))


@pytest.mark.parametrize(
    ("case", "headers"),
    [
        ("forged", lambda b: signing.stripe_headers(b, secret="whsec_wrong")),
        ("stale", lambda b: signing.stripe_headers(b, at=int(time.time()) - 301)),
        ("from the future", lambda b: signing.stripe_headers(b, at=int(time.time()) + 301)),
        ("missing", lambda b: {}),
        ("no v1", lambda b: {"Stripe-Signature": f"t={int(time.time())},v0=abc"}),
        (
            "body changed",
            lambda b: signing.stripe_headers(b.replace(b"2000", b"1")),
        ),
    ],
)
def test_stripe_refuses(case: str, headers: object) -> None:
    body = signing.stripe_event()
    with pytest.raises(InvalidSignature):
        STRIPE.verify(incoming(body, headers(body)))  # type: ignore[operator]


def test_stripe_invoice_events_become_domain_events() -> None:
    [paid] = STRIPE.parse(signing.stripe_event("evt_1", "invoice.paid"))
    assert isinstance(paid, InvoicePaid)
    assert paid.event_id == "stripe:evt_1"
    assert paid.billing_customer_id == "cus_sbx0001"
    invoice = paid.invoice
    assert invoice is not None
    assert (invoice.id, invoice.status, invoice.amount_due, invoice.amount_paid) == (
        "in_sbx0001002",
        InvoiceStatus.PAID,
        0,
        2000,
    )
    assert invoice.paid_at is not None
    assert invoice.source == "stripe"
    opened = signing.stripe_invoice(status="open")
    opened["customer"] = {"id": "cus_sbx0002", "object": "customer"}  # expanded
    [updated] = STRIPE.parse(signing.stripe_event("evt_2", "invoice.finalized", opened))
    assert isinstance(updated, InvoiceUpdated)
    assert updated.invoice is not None
    assert updated.invoice.amount_due == 2000
    assert updated.billing_customer_id == "cus_sbx0002"
    assert STRIPE.parse(signing.stripe_event("evt_3", "charge.succeeded", {"id": "ch_1"})) == []


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"id": "evt_1"}',
        signing.stripe_event(obj={"id": "in_1", "status": "paid"}),  # no customer
        signing.stripe_event(obj={**signing.stripe_invoice(), "status": "weird"}),
    ],
)
def test_stripe_malformed_payloads_are_bad_requests(body: bytes) -> None:
    with pytest.raises(BadPayload):
        STRIPE.parse(body)


# -- HubSpot --------------------------------------------------------------------------------

HUBSPOT = HubSpotWebhook(signing.HUBSPOT_SECRET, tolerance=300, crm_object="contacts")


def test_hubspot_v3_signs_method_uri_body_and_timestamp() -> None:
    body = signing.hubspot_events((1, "contact.propertyChange", "1001"))
    url = "https://portal.example.com/webhooks/hubspot?portal=62515&x=a%3Ab"
    # HubSpot signs the URI with some escapes decoded
    headers = signing.hubspot_headers("POST", signed_uri(url), body)
    assert signed_uri(url).endswith("x=a:b")
    HUBSPOT.verify(incoming(body, headers, url))
    with pytest.raises(InvalidSignature):  # another URL: a replay elsewhere
        HUBSPOT.verify(incoming(body, headers, "https://evil.example.com/webhooks/hubspot"))
    with pytest.raises(InvalidSignature):
        HUBSPOT.verify(
            incoming(body, signing.hubspot_headers("POST", url, body, secret="wrong"), url)
        )
    stale = signing.hubspot_headers("POST", url, body, at_ms=int((time.time() - 301) * 1000))
    with pytest.raises(InvalidSignature):
        HUBSPOT.verify(incoming(body, stale, url))


def test_hubspot_events_of_the_customer_object_become_customer_events() -> None:
    body = signing.hubspot_events(
        (11, "contact.propertyChange", "1001"),
        (12, "contact.deletion", "1002"),
        (13, "company.propertyChange", "77"),  # not the customer object here
        (14, "deal.creation", "5"),
    )
    events = HUBSPOT.parse(body)
    assert [(type(e), e.event_id, e.customer_id) for e in events] == [
        (CustomerUpdated, "hubspot:11", "1001"),
        (CustomerDeleted, "hubspot:12", "1002"),
    ]
    companies = HubSpotWebhook(signing.HUBSPOT_SECRET, crm_object="companies")
    assert [e.customer_id for e in companies.parse(body)] == ["77"]
    generic = json.dumps(
        [{"eventId": 15, "subscriptionType": "object.propertyChange", "objectTypeId": "0-1",
          "objectId": 1003, "occurredAt": 1764300000000}]
    ).encode()  # fmt: skip
    assert [e.customer_id for e in HUBSPOT.parse(generic)] == ["1003"]
    with pytest.raises(BadPayload):
        HUBSPOT.parse(b'{"eventId": 1}')


def test_hubspot_deletions_and_merges_become_customer_deleted() -> None:
    body = json.dumps(
        [{"eventId": 21, "subscriptionType": "contact.privacyDeletion", "objectId": 1004,
          "occurredAt": 1764300000000},
         {"eventId": 22, "subscriptionType": "contact.merge", "objectId": 1001,
          "occurredAt": 1764300000000, "primaryObjectId": 1001, "newObjectId": 1001,
          "mergedObjectIds": [1001, 1003]},
         {"eventId": 23, "subscriptionType": "object.deletion", "objectTypeId": "0-1",
          "objectId": 1005, "occurredAt": 1764300000000}]
    ).encode()  # fmt: skip
    events = HUBSPOT.parse(body)
    assert [(type(e), e.event_id, e.customer_id) for e in events] == [
        (CustomerDeleted, "hubspot:21", "1004"),
        (CustomerDeleted, "hubspot:22:1", "1003"),  # merged away into 1001
        (CustomerUpdated, "hubspot:22:0", "1001"),
        (CustomerDeleted, "hubspot:23", "1005"),
    ]
    assert isinstance(events[1], CustomerDeleted)
    assert events[1].merged_into == "1001"
    companies = HubSpotWebhook(signing.HUBSPOT_SECRET, crm_object="companies")
    company = signing.hubspot_events((24, "company.deletion", "77"))
    assert [(type(e), e.customer_id) for e in companies.parse(company)] == [(CustomerDeleted, "77")]
    with pytest.raises(BadPayload, match="mergedObjectIds"):
        HUBSPOT.parse(signing.hubspot_events((25, "contact.merge", "1001")))


# -- Zendesk --------------------------------------------------------------------------------

ZENDESK = ZendeskWebhook(signing.ZENDESK_SECRET, tolerance=300)


def test_zendesk_signs_timestamp_and_body_within_the_window() -> None:
    body = signing.zendesk_event("e1", "zen:event-type:ticket.status_changed")
    ZENDESK.verify(incoming(body, signing.zendesk_headers(body)))
    with pytest.raises(InvalidSignature):
        ZENDESK.verify(incoming(body, signing.zendesk_headers(body, secret="wrong")))
    old = datetime.now(UTC) - timedelta(seconds=301)
    with pytest.raises(InvalidSignature):
        ZENDESK.verify(incoming(body, signing.zendesk_headers(body, at=old)))
    headers = signing.zendesk_headers(body)
    headers["X-Zendesk-Webhook-Signature-Timestamp"] = "yesterday"
    with pytest.raises(InvalidSignature):
        ZENDESK.verify(incoming(body, headers))


def test_zendesk_ticket_events_become_ticket_updated() -> None:
    [changed] = ZENDESK.parse(
        signing.zendesk_event("e1", "zen:event-type:ticket.status_changed", status="HOLD")
    )
    assert isinstance(changed, TicketUpdated)
    assert changed.ticket is not None
    assert (changed.ticket.id, changed.ticket.status, changed.ticket.priority) == (
        "10000",
        TicketStatus.ON_HOLD,
        "high",
    )
    assert (changed.requester_id, changed.answered) == ("900001", False)
    agent = {"id": "8447388090494", "is_staff": True, "name": "Agent"}
    reply = {"comment": {"id": "1", "body": "Here it is", "is_public": True, "author": agent}}
    [answered] = ZENDESK.parse(
        signing.zendesk_event("e2", "zen:event-type:ticket.comment_added", change=reply)
    )
    assert isinstance(answered, TicketUpdated)
    assert answered.answered
    own = {"comment": {"is_public": True, "author": {"id": "900001", "is_staff": False}}}
    [self_reply] = ZENDESK.parse(
        signing.zendesk_event("e3", "zen:event-type:ticket.comment_added", change=own)
    )
    assert isinstance(self_reply, TicketUpdated)
    assert not self_reply.answered
    internal = {"comment": {"is_public": False, "author": {"id": "1", "is_staff": True}}}
    [note] = ZENDESK.parse(
        signing.zendesk_event("e4", "zen:event-type:ticket.comment_added", change=internal)
    )
    assert isinstance(note, TicketUpdated)
    assert not note.answered
    assert ZENDESK.parse(signing.zendesk_event("e5", "zen:event-type:user.created")) == []


# -- Xero and QuickBooks ----------------------------------------------------------------------

XERO = XeroWebhook(signing.XERO_KEY)
QUICKBOOKS = QuickBooksWebhook(signing.QUICKBOOKS_VERIFIER)


def test_xero_signature_and_thin_invoice_events() -> None:
    body = signing.xero_events("inv-1", "inv-2")
    XERO.verify(incoming(body, signing.xero_headers(body)))
    with pytest.raises(InvalidSignature):
        XERO.verify(incoming(body, signing.xero_headers(body, key="wrong")))
    events = XERO.parse(body)
    assert [(type(e), e.invoice_id) for e in events] == [  # type: ignore[attr-defined]
        (InvoiceUpdated, "inv-1"),
        (InvoiceUpdated, "inv-2"),
    ]
    assert len({e.event_id for e in events}) == 2
    assert XERO.parse(signing.xero_events()) == []  # intent to receive


def test_quickbooks_signature_and_both_payload_shapes() -> None:
    body = signing.quickbooks_events("145")
    QUICKBOOKS.verify(incoming(body, signing.quickbooks_headers(body)))
    with pytest.raises(InvalidSignature):
        QUICKBOOKS.verify(incoming(body, signing.quickbooks_headers(body, verifier="wrong")))
    [classic] = QUICKBOOKS.parse(body)  # the Customer entity is not an invoice
    assert isinstance(classic, InvoiceUpdated)
    assert classic.invoice_id == "145"
    cloud = json.dumps(
        [{"specversion": "1.0", "id": "88cd52", "source": "intuit.dsnBgbseACLLRZNxo2dfc4e",
          "type": "qbo.invoice.updated.v1", "datacontenttype": "application/json",
          "time": "2026-11-28T04:00:00Z", "intuitentityid": "146", "intuitaccountid": "1185883450",
          "data": {}},
         {"specversion": "1.0", "id": "88cd53", "type": "qbo.customer.updated.v1",
          "time": "2026-11-28T04:00:00Z", "intuitentityid": "58"}]
    ).encode()  # fmt: skip
    [event] = QUICKBOOKS.parse(cloud)
    assert (event.event_id, event.invoice_id) == ("quickbooks:88cd52", "146")  # type: ignore[attr-defined]
    with pytest.raises(BadPayload):
        QUICKBOOKS.parse(b'{"eventNotifications": "nope"}')


# -- signed timestamps that int() cannot read ------------------------------------------------


@pytest.mark.parametrize(
    ("webhook", "headers"),
    [
        (STRIPE, lambda b: signing.stripe_headers(b, at="²")),  # str.isdigit says yes
        (STRIPE, lambda b: signing.stripe_headers(b, at="9" * 5000)),  # over int()'s 4300 digits
        (HUBSPOT, lambda b: signing.hubspot_headers("POST", URL, b, at_ms="9" * 400)),  # no float
    ],
    ids=["stripe-superscript", "stripe-5000-digits", "hubspot-400-digits"],
)
def test_a_signed_timestamp_that_is_no_number_is_an_invalid_signature(
    webhook: StripeWebhook | HubSpotWebhook, headers: object
) -> None:
    body = signing.stripe_event()  # signed; what it holds does not matter here
    with pytest.raises(InvalidSignature):
        webhook.verify(incoming(body, headers(body)))  # type: ignore[operator]
