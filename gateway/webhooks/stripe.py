"""Stripe: `Stripe-Signature: t=...,v1=...[,v1=...]` over `{t}.{body}`; invoice events.

`invoice.paid` becomes InvoicePaid, every other `invoice.*` event InvoiceUpdated, each with
the invoice object of the event parsed into the domain Invoice (the fields of DESIGN §11).
Other event types are acknowledged and ignored.
"""

from __future__ import annotations

from typing import Any

from gateway.domain import DomainEvent, Invoice, InvoicePaid, InvoiceStatus, InvoiceUpdated
from gateway.webhooks.provider import (
    BadPayload,
    Incoming,
    InvalidSignature,
    TimedWebhook,
    json_event,
    parse_time,
    require_str,
)
from gateway.webhooks.signatures import check_any, check_window, hmac_hex

__all__ = ["StripeWebhook", "invoice_from_stripe"]

_STATUSES = {status.value.lower(): status for status in InvoiceStatus}


def _int(payload: dict[str, Any], key: str, default: int | None = None) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadPayload(f"invoice '{key}' is not an integer")
    return value


def invoice_from_stripe(obj: Any) -> Invoice:
    """A Stripe invoice object as the domain Invoice."""
    if not isinstance(obj, dict):
        raise BadPayload("data.object is not an invoice")
    customer = obj.get("customer")
    if isinstance(customer, dict):  # expanded
        customer = customer.get("id")
    if not isinstance(customer, str) or not customer:
        raise BadPayload("the invoice has no customer")
    status = _STATUSES.get(str(obj.get("status") or "").lower())
    if status is None:
        raise BadPayload(f"unknown invoice status {obj.get('status')!r}")
    transitions = obj.get("status_transitions") or {}
    paid_at = transitions.get("paid_at") if isinstance(transitions, dict) else None
    due_date = obj.get("due_date")
    amount_due = obj.get("amount_remaining", obj.get("amount_due"))
    return Invoice(
        id=require_str(obj, "id"),
        status=status,
        currency=str(obj.get("currency") or "").lower(),
        total=_int(obj, "total"),
        amount_due=_int({"amount_remaining": amount_due}, "amount_remaining"),
        amount_paid=_int(obj, "amount_paid", 0),
        created_at=parse_time(obj.get("created")),
        billing_customer_id=customer,
        source="stripe",
        number=obj.get("number") if isinstance(obj.get("number"), str) else None,
        due_date=parse_time(due_date) if due_date else None,
        paid_at=parse_time(paid_at) if paid_at else None,
        hosted_url=obj.get("hosted_invoice_url") or None,
        pdf_url=obj.get("invoice_pdf") or None,
    )


class StripeWebhook(TimedWebhook):
    name = "stripe"
    reject_status = 400
    quiet = False

    def verify(self, incoming: Incoming) -> None:
        header = incoming.headers.get("stripe-signature", "")
        timestamp = ""
        signatures: list[str] = []
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            if key == "t":
                timestamp = value
            elif key == "v1":
                signatures.append(value)
        if not timestamp.isdigit() or not signatures:
            raise InvalidSignature("missing or malformed Stripe-Signature")
        check_any(signatures, hmac_hex(self._secret, timestamp.encode() + b"." + incoming.body))
        check_window(int(timestamp), incoming.now, self.tolerance)

    def parse(self, body: bytes) -> list[DomainEvent]:
        payload, event_type = json_event(body, "a Stripe event")
        if not event_type.startswith("invoice."):
            return []
        data = payload.get("data")
        invoice = invoice_from_stripe(data.get("object") if isinstance(data, dict) else None)
        kind = InvoicePaid if event_type == "invoice.paid" else InvoiceUpdated
        return [
            kind(
                event_id=f"stripe:{require_str(payload, 'id')}",
                customer_id=None,
                occurred_at=parse_time(payload.get("created")),
                invoice=invoice,
                billing_customer_id=invoice.billing_customer_id,
                invoice_id=invoice.id,
            )
        ]
