"""HubSpot v3: `X-HubSpot-Signature-v3` = base64 HMAC-SHA256 of method + URI + body +
timestamp with the app's client secret; `X-HubSpot-Request-Timestamp` (ms) in the window.

A delivery is a JSON array of events; property changes, creations and deletions of the
CRM object that is "the customer" (HUBSPOT_OBJECT) become CustomerUpdated.
"""

from __future__ import annotations

import re

from gateway.domain import CustomerUpdated, DomainEvent
from gateway.webhooks.payload import epoch_time, json_body, require_str
from gateway.webhooks.provider import BadPayload, Incoming, InvalidSignature
from gateway.webhooks.signatures import check_any, check_window, hmac_base64, signed_unix_time

__all__ = ["HubSpotWebhook", "signed_uri"]

# HubSpot signs the URI with these escapes decoded (its v3 validation guide)
_DECODED = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_ESCAPE = re.compile("|".join(_DECODED), re.IGNORECASE)
# object type ids of the generic `object.*` subscriptions
_OBJECT_TYPE_IDS = {"contacts": "0-1", "companies": "0-2"}


def signed_uri(url: str) -> str:
    return _ESCAPE.sub(lambda m: _DECODED[m.group(0).upper()], url)


class HubSpotWebhook:
    name = "hubspot"
    reject_status = 400
    quiet = False

    def __init__(self, secret: str, tolerance: float = 300, crm_object: str = "contacts") -> None:
        self._secret = secret
        self.tolerance = tolerance
        self.crm_object = crm_object
        self._prefix = "contact." if crm_object == "contacts" else "company."

    def verify(self, incoming: Incoming) -> None:
        signature = incoming.headers.get("x-hubspot-signature-v3", "")
        timestamp = incoming.headers.get("x-hubspot-request-timestamp", "")
        if not signature or not timestamp:
            raise InvalidSignature("missing X-HubSpot-Signature-v3 or its timestamp")
        signed_at = signed_unix_time(timestamp, millis=True)
        message = (
            incoming.method.upper().encode()
            + signed_uri(incoming.url).encode()
            + incoming.body
            + timestamp.encode()
        )
        check_any([signature], hmac_base64(self._secret, message))
        check_window(signed_at, incoming.now, self.tolerance)

    def _concerns_customer(self, event: dict[str, object]) -> bool:
        kind = str(event.get("subscriptionType") or "")
        if kind.startswith(self._prefix):
            return True
        return (
            kind.startswith("object.")
            and str(event.get("objectTypeId")) == (_OBJECT_TYPE_IDS[self.crm_object])
        )

    def parse(self, body: bytes) -> list[DomainEvent]:
        payload = json_body(body)
        if not isinstance(payload, list) or not all(isinstance(e, dict) for e in payload):
            raise BadPayload("a HubSpot delivery is a JSON array of event objects")
        events: list[DomainEvent] = []
        for event in payload:
            if not self._concerns_customer(event):
                continue
            events.append(
                CustomerUpdated(
                    event_id=f"hubspot:{require_str(event, 'eventId')}",
                    customer_id=require_str(event, "objectId"),
                    occurred_at=epoch_time(event.get("occurredAt"), "occurredAt", millis=True),
                )
            )
        return events
