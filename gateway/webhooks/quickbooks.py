"""QuickBooks Online: `intuit-signature` = base64 HMAC-SHA256 of the body with the app's
verifier token. Intuit signs no timestamp: replays are stopped by the event-id dedupe.

Both payload shapes are read: the classic `eventNotifications[].dataChangeEvent.entities[]`
and the CloudEvents array (`type: qbo.invoice.updated.v1`). Invoice changes become
InvoiceUpdated with `invoice_id`, completed from the billing source on intake.
"""

from __future__ import annotations

from typing import Any

from gateway.domain import DomainEvent, InvoiceUpdated
from gateway.webhooks.payload import iso_time, json_body, optional_str, require_str
from gateway.webhooks.provider import BadPayload, Incoming
from gateway.webhooks.signatures import check_body_signature

__all__ = ["QuickBooksWebhook"]


def _objects(value: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise BadPayload(f"{what} is not an array of objects")
    return value


class QuickBooksWebhook:
    name = "quickbooks"
    reject_status = 400
    quiet = False

    def __init__(self, verifier: str) -> None:
        self._verifier = verifier

    def verify(self, incoming: Incoming) -> None:
        check_body_signature(incoming, "intuit-signature", self._verifier)

    def parse(self, body: bytes) -> list[DomainEvent]:
        payload = json_body(body)
        if isinstance(payload, list):
            return self._cloud_events(_objects(payload, "the CloudEvents payload"))
        if not isinstance(payload, dict):
            raise BadPayload("a QuickBooks delivery is a JSON object or array")
        events: list[DomainEvent] = []
        for notification in _objects(payload.get("eventNotifications"), "eventNotifications"):
            realm = optional_str(notification, "realmId") or ""
            change = notification.get("dataChangeEvent")
            entities = change.get("entities") if isinstance(change, dict) else None
            for entity in _objects(entities, "dataChangeEvent.entities"):
                if entity.get("name") != "Invoice":
                    continue
                invoice_id = require_str(entity, "id")
                when = require_str(entity, "lastUpdated")
                operation = optional_str(entity, "operation") or ""
                events.append(
                    InvoiceUpdated(
                        event_id=f"quickbooks:{realm}:{invoice_id}:{operation}:{when}",
                        customer_id=None,
                        occurred_at=iso_time(when, "lastUpdated"),
                        invoice_id=invoice_id,
                    )
                )
        return events

    def _cloud_events(self, payload: list[dict[str, Any]]) -> list[DomainEvent]:
        events: list[DomainEvent] = []
        for event in payload:
            if not str(event.get("type") or "").startswith("qbo.invoice."):
                continue
            events.append(
                InvoiceUpdated(
                    event_id=f"quickbooks:{require_str(event, 'id')}",
                    customer_id=None,
                    occurred_at=iso_time(event.get("time"), "time"),
                    invoice_id=require_str(event, "intuitentityid"),
                )
            )
        return events
