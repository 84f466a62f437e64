"""Stripe: `Stripe-Signature: t=...,v1=...[,v1=...]` over `{t}.{body}`; invoice events.

`invoice.paid` becomes InvoicePaid, every other `invoice.*` event InvoiceUpdated, each with
the invoice object of the event parsed into the domain Invoice (the fields of DESIGN §11).
Other event types are acknowledged and ignored.
"""

from __future__ import annotations

from typing import Any

from gateway.domain import DomainEvent, Invoice, InvoicePaid, InvoiceStatus, InvoiceUpdated
from gateway.webhooks.payload import (
    epoch_time,
    json_event,
    optional_str,
    require_int,
    require_str,
)
from gateway.webhooks.provider import BadPayload, Incoming, InvalidSignature, TimedWebhook
from gateway.webhooks.signatures import check_any, check_window, hmac_hex, signed_unix_time

__all__ = ["StripeWebhook", "invoice_from_stripe"]

_STATUSES = {status.value.lower(): status for status in InvoiceStatus}


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
        raise BadPayload(f"unknown invoice status {obj.get('status')!r:.40}")
    transitions = obj.get("status_transitions") or {}
    if not isinstance(transitions, dict):
        raise BadPayload("'status_transitions' is not an object")
    paid_at = transitions.get("paid_at")
    due_date = obj.get("due_date")
    return Invoice(
        id=require_str(obj, "id"),
        status=status,
        currency=(optional_str(obj, "currency") or "").lower(),
        total=require_int(obj, "total"),
        # what is still owed; amount_due from before Stripe had amount_remaining
        amount_due=require_int(
            obj, "amount_remaining" if "amount_remaining" in obj else "amount_due"
        ),
        amount_paid=require_int(obj, "amount_paid") if "amount_paid" in obj else 0,
        created_at=epoch_time(obj.get("created"), "invoice.created"),
        billing_customer_id=customer,
        source="stripe",
        number=optional_str(obj, "number"),
        due_date=None if due_date is None else epoch_time(due_date, "invoice.due_date"),
        paid_at=None if paid_at is None else epoch_time(paid_at, "invoice.paid_at"),
        hosted_url=optional_str(obj, "hosted_invoice_url"),
        pdf_url=optional_str(obj, "invoice_pdf"),
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
        if not signatures:
            raise InvalidSignature("missing or malformed Stripe-Signature")
        signed_at = signed_unix_time(timestamp)
        check_any(signatures, hmac_hex(self._secret, timestamp.encode() + b"." + incoming.body))
        check_window(signed_at, incoming.now, self.tolerance)

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
                occurred_at=epoch_time(payload.get("created"), "created"),
                invoice=invoice,
                billing_customer_id=invoice.billing_customer_id,
                invoice_id=invoice.id,
            )
        ]
