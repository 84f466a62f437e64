"""Deliveries as each provider signs them, for tests (the providers' documented schemes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

STRIPE_SECRET = "whsec_test_0123456789abcdef"
HUBSPOT_SECRET = "hubspot-client-secret-for-tests"
ZENDESK_SECRET = "zendesk-signing-secret-for-tests"
XERO_KEY = "xero-webhook-key-for-tests"
QUICKBOOKS_VERIFIER = "quickbooks-verifier-token-for-tests"

WEBHOOK_SECRETS = {
    "stripe_webhook_secret": STRIPE_SECRET,
    "hubspot_client_secret": HUBSPOT_SECRET,
    "zendesk_webhook_secret": ZENDESK_SECRET,
    "xero_webhook_key": XERO_KEY,
    "quickbooks_webhook_verifier": QUICKBOOKS_VERIFIER,
}


def _hmac(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def stripe_headers(
    body: bytes, *, secret: str = STRIPE_SECRET, at: int | str | None = None, extra_v1: int = 0
) -> dict[str, str]:
    t = int(time.time()) if at is None else at
    signature = _hmac(secret, f"{t}.".encode() + body).hex()
    # several v1 values: Stripe sends one per active secret while a secret is rolled
    decoys = [hashlib.sha256(f"decoy{i}".encode()).hexdigest() for i in range(extra_v1)]
    v1 = ",".join(f"v1={s}" for s in [*decoys, signature])
    return {"Stripe-Signature": f"t={t},{v1},v0=ignored", "Content-Type": "application/json"}


def stripe_invoice(
    invoice_id: str = "in_sbx0001002",
    customer: str = "cus_sbx0001",
    *,
    status: str = "paid",
    total: int = 2000,
) -> dict[str, Any]:
    now = int(time.time())
    paid = status == "paid"
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": customer,
        "status": status,
        "currency": "usd",
        "total": total,
        "amount_due": total,
        "amount_paid": total if paid else 0,
        "amount_remaining": 0 if paid else total,
        "created": now - 86_400,
        "due_date": now + 86_400,
        "number": f"NR-{invoice_id}",
        "hosted_invoice_url": f"https://invoice.stripe.com/i/{invoice_id}",
        "invoice_pdf": f"https://pay.stripe.com/invoice/{invoice_id}/pdf",
        "status_transitions": {"paid_at": now if paid else None},
    }


def stripe_event(
    event_id: str = "evt_test_1", event_type: str = "invoice.paid", obj: Any = None
) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": obj if obj is not None else stripe_invoice()},
        }
    ).encode()


def hubspot_headers(
    method: str,
    url: str,
    body: bytes,
    *,
    secret: str = HUBSPOT_SECRET,
    at_ms: int | str | None = None,
) -> dict[str, str]:
    timestamp = str(int(time.time() * 1000) if at_ms is None else at_ms)
    message = method.encode() + url.encode() + body + timestamp.encode()
    return {
        "X-HubSpot-Signature-v3": base64.b64encode(_hmac(secret, message)).decode(),
        "X-HubSpot-Request-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


def hubspot_events(*events: tuple[int, str, str]) -> bytes:
    """(eventId, subscriptionType, objectId) each."""
    now = int(time.time() * 1000)
    return json.dumps(
        [
            {
                "eventId": event_id,
                "subscriptionId": 7,
                "portalId": 62515,
                "appId": 1160452,
                "occurredAt": now,
                "subscriptionType": kind,
                "attemptNumber": 0,
                "objectId": int(object_id),
                "changeSource": "CRM",
                "propertyName": "phone",
                "propertyValue": "+1 555 0100",
            }
            for event_id, kind, object_id in events
        ]
    ).encode()


def zendesk_headers(
    body: bytes, *, secret: str = ZENDESK_SECRET, at: datetime | None = None
) -> dict[str, str]:
    timestamp = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "X-Zendesk-Webhook-Signature": base64.b64encode(
            _hmac(secret, timestamp.encode() + body)
        ).decode(),
        "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


def zendesk_event(
    event_id: str,
    event_type: str,
    *,
    ticket_id: str = "10000",
    requester_id: str = "900001",
    status: str = "PENDING",
    change: dict[str, Any] | None = None,
) -> bytes:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(
        {
            "account_id": 22129848,
            "detail": {
                "actor_id": "8447388090494",
                "assignee_id": "8447388090494",
                "created_at": "2026-01-05T09:00:00Z",
                "description": "Where can I download last month's invoice?",
                "id": ticket_id,
                "is_public": True,
                "priority": "HIGH",
                "requester_id": requester_id,
                "status": status,
                "subject": "Question 1 from Ada Lovelace",
                "updated_at": now,
                "via": {"channel": "web_service"},
            },
            "event": change or {},
            "id": event_id,
            "subject": f"zen:ticket:{ticket_id}",
            "time": now,
            "type": event_type,
            "zendesk_event_version": "2022-11-06",
        }
    ).encode()


def xero_headers(body: bytes, *, key: str = XERO_KEY) -> dict[str, str]:
    return {
        "x-xero-signature": base64.b64encode(_hmac(key, body)).decode(),
        "Content-Type": "application/json",
    }


def xero_events(*invoice_ids: str) -> bytes:
    return json.dumps(
        {
            "events": [
                {
                    "resourceUrl": f"https://api.xero.com/api.xro/2.0/Invoices/{i}",
                    "resourceId": i,
                    "eventDateUtc": "2026-11-28T04:00:00.000",
                    "eventType": "UPDATE",
                    "eventCategory": "INVOICE",
                    "tenantId": "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f",
                    "tenantType": "ORGANISATION",
                }
                for i in invoice_ids
            ],
            "firstEventSequence": 1,
            "lastEventSequence": len(invoice_ids),
            "entropy": "S0m3r4Nd0mt3xt",
        },
        separators=(",", ":"),
    ).encode()


def quickbooks_headers(body: bytes, *, verifier: str = QUICKBOOKS_VERIFIER) -> dict[str, str]:
    return {
        "intuit-signature": base64.b64encode(_hmac(verifier, body)).decode(),
        "Content-Type": "application/json",
    }


def quickbooks_events(*invoice_ids: str, operation: str = "Update") -> bytes:
    return json.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": "1185883450",
                    "dataChangeEvent": {
                        "entities": [
                            {
                                "name": "Invoice",
                                "id": i,
                                "operation": operation,
                                "lastUpdated": "2026-11-28T04:00:00.000Z",
                            }
                            for i in invoice_ids
                        ]
                        + [
                            {
                                "name": "Customer",
                                "id": "58",
                                "operation": "Update",
                                "lastUpdated": "2026-11-28T04:00:00.000Z",
                            }
                        ]
                    },
                }
            ]
        }
    ).encode()


def signed_headers(provider: str, body: bytes, url: str) -> dict[str, str]:
    """The headers `provider` sends with `body` to `url` (only HubSpot signs the URL)."""
    sign: dict[str, Callable[[bytes], dict[str, str]]] = {
        "stripe": stripe_headers,
        "hubspot": lambda b: hubspot_headers("POST", url, b),
        "zendesk": zendesk_headers,
        "xero": xero_headers,
        "quickbooks": quickbooks_headers,
    }
    return sign[provider](body)


def quickbooks_cloud_events(*invoice_ids: str) -> bytes:
    """The CloudEvents shape of QuickBooks webhooks: one `qbo.invoice.updated.v1` each."""
    return json.dumps(
        [
            {
                "specversion": "1.0",
                "id": f"ce-{i}",
                "source": "intuit.dsnBgbseACLLRZNxo2dfc4e",
                "type": "qbo.invoice.updated.v1",
                "datacontenttype": "application/json",
                "time": "2026-11-28T04:00:00Z",
                "intuitentityid": i,
                "intuitaccountid": "1185883450",
                "data": {},
            }
            for i in invoice_ids
        ]
    ).encode()
