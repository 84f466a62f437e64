"""Xero: `x-xero-signature` = base64 HMAC-SHA256 of the body with the webhook key.

Xero's intent-to-receive sends empty deliveries, some signed wrongly, and expects 200 for
a valid signature and 401 for an invalid one, with empty bodies. Xero signs no timestamp:
replays are stopped by the event-id dedupe. Events carry ids only: invoice events become
InvoiceUpdated with `invoice_id`, completed from the billing source on intake.
"""

from __future__ import annotations

from gateway.domain import DomainEvent, InvoiceUpdated
from gateway.webhooks.payload import iso_time, json_body, optional_str, require_str
from gateway.webhooks.provider import BadPayload, Incoming
from gateway.webhooks.signatures import check_body_signature

__all__ = ["XeroWebhook"]


class XeroWebhook:
    name = "xero"
    reject_status = 401
    quiet = True

    def __init__(self, key: str) -> None:
        self._key = key

    def verify(self, incoming: Incoming) -> None:
        check_body_signature(incoming, "x-xero-signature", self._key)

    def parse(self, body: bytes) -> list[DomainEvent]:
        payload = json_body(body)
        if not isinstance(payload, dict) or not isinstance(payload.get("events", []), list):
            raise BadPayload("a Xero delivery is an object with an 'events' array")
        events: list[DomainEvent] = []
        for event in payload.get("events", []):
            if not isinstance(event, dict):
                raise BadPayload("a Xero event is an object")
            if str(event.get("eventCategory", "")).upper() != "INVOICE":
                continue
            resource = require_str(event, "resourceId")
            when = require_str(event, "eventDateUtc")
            tenant = optional_str(event, "tenantId") or ""
            kind = optional_str(event, "eventType") or ""
            events.append(
                InvoiceUpdated(
                    event_id=f"xero:{tenant}:{resource}:{kind}:{when}",
                    customer_id=None,
                    occurred_at=iso_time(when, "eventDateUtc"),
                    invoice_id=resource,
                )
            )
        return events
