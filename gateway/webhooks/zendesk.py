"""Zendesk: `X-Zendesk-Webhook-Signature` = base64 HMAC-SHA256 of timestamp + body with the
webhook's signing secret; `X-Zendesk-Webhook-Signature-Timestamp` (ISO 8601) in the window.

Ticket events of webhook event subscriptions (`zen:event-type:ticket.*`) become
TicketUpdated with the ticket of `detail`; a public comment by an agent marks it
`answered`, which the worker turns into a notification to the requester.
"""

from __future__ import annotations

from typing import Any

from gateway.domain import DomainEvent, Ticket, TicketStatus, TicketUpdated
from gateway.webhooks.payload import iso_time, json_event, optional_str, require_str
from gateway.webhooks.provider import BadPayload, Incoming, InvalidSignature, TimedWebhook
from gateway.webhooks.signatures import check_any, check_window, hmac_base64

__all__ = ["ZendeskWebhook", "ticket_from_zendesk"]

_TICKET_EVENT = "zen:event-type:ticket."
_STATUSES = {status.value: status for status in TicketStatus} | {"HOLD": TicketStatus.ON_HOLD}


def ticket_from_zendesk(detail: Any) -> Ticket:
    """The `detail` of a ticket event as the domain Ticket."""
    if not isinstance(detail, dict):
        raise BadPayload("the event has no ticket detail")
    status = _STATUSES.get(str(detail.get("status") or "").upper())
    if status is None:
        raise BadPayload(f"unknown ticket status {detail.get('status')!r:.40}")
    priority = optional_str(detail, "priority")
    updated = detail.get("updated_at")
    return Ticket(
        id=require_str(detail, "id"),
        subject=optional_str(detail, "subject") or "",
        status=status,
        created_at=iso_time(detail.get("created_at"), "detail.created_at"),
        requester_id=require_str(detail, "requester_id"),
        description=optional_str(detail, "description"),
        priority=priority.lower() if priority else None,
        updated_at=None if updated is None else iso_time(updated, "detail.updated_at"),
    )


def _answered(event_type: str, change: Any, requester_id: str) -> bool:
    """A public comment by someone on the support side."""
    if event_type != _TICKET_EVENT + "comment_added" or not isinstance(change, dict):
        return False
    comment = change.get("comment")
    if not isinstance(comment, dict) or comment.get("is_public") is False:
        return False
    author = comment.get("author")
    if not isinstance(author, dict):
        return False
    if "is_staff" in author:
        return author.get("is_staff") is True
    return str(author.get("id")) != requester_id


class ZendeskWebhook(TimedWebhook):
    name = "zendesk"
    reject_status = 400
    quiet = False

    def verify(self, incoming: Incoming) -> None:
        signature = incoming.headers.get("x-zendesk-webhook-signature", "")
        timestamp = incoming.headers.get("x-zendesk-webhook-signature-timestamp", "")
        if not signature or not timestamp:
            raise InvalidSignature("missing X-Zendesk-Webhook-Signature or its timestamp")
        check_any([signature], hmac_base64(self._secret, timestamp.encode() + incoming.body))
        try:
            signed_at = iso_time(timestamp, "timestamp").timestamp()
        except BadPayload:
            raise InvalidSignature("malformed signature timestamp") from None
        check_window(signed_at, incoming.now, self.tolerance)

    def parse(self, body: bytes) -> list[DomainEvent]:
        payload, event_type = json_event(body, "a Zendesk event")
        if not event_type.startswith(_TICKET_EVENT):
            return []
        ticket = ticket_from_zendesk(payload.get("detail"))
        return [
            TicketUpdated(
                event_id=f"zendesk:{require_str(payload, 'id')}",
                customer_id=None,
                occurred_at=iso_time(payload.get("time"), "time"),
                ticket=ticket,
                requester_id=ticket.requester_id,
                ticket_id=ticket.id,
                answered=_answered(event_type, payload.get("event"), ticket.requester_id),
            )
        ]
