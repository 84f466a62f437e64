"""HubSpot v3: `X-HubSpot-Signature-v3` = base64 HMAC-SHA256 of method + URI + body +
timestamp with the app's client secret; `X-HubSpot-Request-Timestamp` (ms) in the window.

A delivery is a JSON array of events about the CRM object that is "the customer"
(HUBSPOT_OBJECT): property changes and creations become CustomerUpdated; deletions (and
GDPR deletions) CustomerDeleted; a merge CustomerDeleted for each record merged away and
CustomerUpdated for the record that remains.
"""

from __future__ import annotations

import re
from datetime import datetime

from gateway.domain import CustomerDeleted, CustomerUpdated, DomainEvent
from gateway.webhooks.payload import epoch_time, json_body, optional_str, require_str
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
            event_id = f"hubspot:{require_str(event, 'eventId')}"
            customer_id = require_str(event, "objectId")
            occurred_at = epoch_time(event.get("occurredAt"), "occurredAt", millis=True)
            action = str(event.get("subscriptionType")).rpartition(".")[2]
            if action in ("deletion", "privacyDeletion"):
                events.append(CustomerDeleted(event_id, customer_id, occurred_at))
            elif action == "merge":
                events.extend(_merge(event, event_id, customer_id, occurred_at))
            else:
                events.append(CustomerUpdated(event_id, customer_id, occurred_at))
        return events


def _merge(
    event: dict[str, object], event_id: str, object_id: str, occurred_at: datetime
) -> list[DomainEvent]:
    """The records merged away are deleted; the one that remains (`newObjectId`, else the
    primary) is updated. Each event's id adds its position (never the record's id, which
    would then be kept in the dedupe key): each is deduplicated alone."""
    merged = event.get("mergedObjectIds")
    if not isinstance(merged, list) or not all(
        isinstance(i, int | str) and not isinstance(i, bool) for i in merged
    ):
        raise BadPayload("'mergedObjectIds' is missing or not a list of ids")
    survivor = (
        optional_str(_as_text(event, "newObjectId"), "newObjectId")
        or optional_str(_as_text(event, "primaryObjectId"), "primaryObjectId")
        or object_id
    )
    gone = [str(i) for i in merged if str(i) != survivor]
    events: list[DomainEvent] = [
        CustomerDeleted(f"{event_id}:{n}", id, occurred_at, merged_into=survivor)
        for n, id in enumerate(gone, 1)
    ]
    events.append(CustomerUpdated(f"{event_id}:0", survivor, occurred_at))
    return events


def _as_text(event: dict[str, object], key: str) -> dict[str, object]:
    """HubSpot sends ids as numbers: the field as text, for optional_str."""
    value = event.get(key)
    return {key: str(value) if isinstance(value, int) and not isinstance(value, bool) else value}
