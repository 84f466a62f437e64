"""Provider-neutral models. Adapters parse provider JSON into these at their edge.

They are msgspec Structs: attribute access as fast as a slotted class, and a compact,
typed msgpack encoding for the cache (see gateway/cache/codec.py).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Generic, TypeVar

import msgspec

__all__ = [
    "BillingPortalSession",
    "Customer",
    "CustomerDeleted",
    "CustomerUpdated",
    "DeliveryState",
    "DomainEvent",
    "FileDeleted",
    "FileQuery",
    "FileUploaded",
    "Invoice",
    "InvoicePaid",
    "InvoiceQuery",
    "InvoiceStatus",
    "InvoiceUpdated",
    "Page",
    "ProfileChanges",
    "QueuedWrite",
    "StoredFile",
    "Subscription",
    "Ticket",
    "TicketDraft",
    "TicketQuery",
    "TicketStatus",
    "TicketUpdated",
    "UploadForm",
    "WriteDelivery",
    "WriteKind",
    "WriteQueued",
]

T = TypeVar("T")


class InvoiceStatus(enum.Enum):
    DRAFT = "DRAFT"
    OPEN = "OPEN"
    PAID = "PAID"
    VOID = "VOID"
    UNCOLLECTIBLE = "UNCOLLECTIBLE"


class TicketStatus(enum.Enum):
    NEW = "NEW"
    OPEN = "OPEN"
    PENDING = "PENDING"
    ON_HOLD = "ON_HOLD"
    SOLVED = "SOLVED"
    CLOSED = "CLOSED"


class DeliveryState(enum.Enum):
    """Where a write the customer made stands (gateway/outbox/)."""

    QUEUED = "QUEUED"  # accepted and stored; the provider has not taken it yet
    DELIVERED = "DELIVERED"  # the provider has it
    FAILED = "FAILED"  # the provider refused it, or it could not be delivered in time


class WriteDelivery(msgspec.Struct, frozen=True):
    """A write's state as the customer sees it; `reason` in plain words once FAILED."""

    write_id: str
    state: DeliveryState
    accepted_at: datetime
    delivered_at: datetime | None = None
    reason: str | None = None


class Customer(msgspec.Struct, frozen=True):
    """A customer as the CRM knows it; `id` is the CRM id."""

    id: str
    name: str | None = None
    email: str | None = None
    company: str | None = None
    phone: str | None = None
    billing_id: str | None = None  # the same customer in billing (Stripe cus_..., etc.)
    helpdesk_id: str | None = None  # the same customer in the help desk (Zendesk user id)
    # set only on the customer's own view while a profile change waits (or has failed)
    delivery: WriteDelivery | None = None


class Invoice(msgspec.Struct, frozen=True):
    id: str
    status: InvoiceStatus
    currency: str  # lower-case ISO 4217
    total: int  # minor units
    amount_due: int  # what is still owed now
    amount_paid: int
    created_at: datetime
    billing_customer_id: str
    source: str
    number: str | None = None
    due_date: datetime | None = None
    paid_at: datetime | None = None
    hosted_url: str | None = None
    pdf_url: str | None = None


class Subscription(msgspec.Struct, frozen=True):
    id: str
    status: str
    billing_customer_id: str
    plan: str | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False


class Ticket(msgspec.Struct, frozen=True):
    id: str
    subject: str
    status: TicketStatus
    created_at: datetime
    requester_id: str  # the help-desk user id
    description: str | None = None
    priority: str | None = None
    updated_at: datetime | None = None
    # set on a ticket that waited in the outbox: provisional, delivered, or failed
    delivery: WriteDelivery | None = None


class StoredFile(msgspec.Struct, frozen=True):
    id: str  # opaque; never names a storage key another customer could reach
    customer_id: str
    name: str
    size: int
    uploaded_at: datetime
    content_type: str | None = None


class Page(msgspec.Struct, Generic[T], frozen=True):
    """One page of a list; `next_cursor` is None on the last page."""

    items: list[T]
    next_cursor: str | None = None
    total_count: int | None = None
    # per-item cursors where the provider has them; otherwise every edge carries the page's
    cursors: list[str] | None = None

    @property
    def has_next_page(self) -> bool:
        return self.next_cursor is not None

    @property
    def end_cursor(self) -> str | None:
        if self.next_cursor is not None:
            return self.next_cursor
        return self.cursors[-1] if self.cursors else None


class InvoiceQuery(msgspec.Struct, frozen=True):
    billing_id: str
    first: int = 20
    after: str | None = None
    status: InvoiceStatus | None = None


class TicketQuery(msgspec.Struct, frozen=True):
    requester_id: str
    first: int = 20
    after: str | None = None
    status: TicketStatus | None = None


class FileQuery(msgspec.Struct, frozen=True):
    customer_id: str
    first: int = 20
    after: str | None = None


class ProfileChanges(msgspec.Struct, frozen=True):
    """The editable profile fields; None = unchanged."""

    name: str | None = None
    phone: str | None = None
    company: str | None = None


class TicketDraft(msgspec.Struct, frozen=True):
    subject: str
    description: str
    priority: str | None = None


class WriteKind(enum.Enum):
    CREATE_TICKET = "create_ticket"
    UPDATE_PROFILE = "update_profile"
    DELETE_FILE = "delete_file"


class QueuedWrite(msgspec.Struct, frozen=True):
    """A customer's write to a provider, kept in the outbox until delivered (one of
    `draft`, `changes`, `file` is set, by `kind`)."""

    id: str  # "w" + random hex: what a provisional ticket's id is made of
    kind: WriteKind
    customer_id: str  # CRM id
    seq: int  # per customer: writes are delivered in this order
    accepted_at: datetime
    idempotency_key: str  # the same key on every attempt, the first (synchronous) one included
    state: DeliveryState = DeliveryState.QUEUED
    reason: str | None = None
    attempts: int = 0
    retried_at: datetime | None = None  # an operator's retry: the age limit counts from here
    not_before: datetime | None = None  # the next delivery waits till then (backoff, Retry-After)
    delivered_at: datetime | None = None
    result_id: str | None = None  # the provider's id of what was created (a ticket)
    requester_id: str | None = None
    draft: TicketDraft | None = None
    client_mutation_id: str | None = None
    changes: ProfileChanges | None = None
    file: StoredFile | None = None

    @property
    def delivery(self) -> WriteDelivery:
        return WriteDelivery(
            write_id=self.id,
            state=self.state,
            accepted_at=self.accepted_at,
            delivered_at=self.delivered_at,
            reason=self.reason,
        )


class UploadForm(msgspec.Struct, frozen=True):
    """A presigned form the browser posts a file to."""

    url: str
    fields: dict[str, str]
    file_id: str
    expires_at: datetime


class BillingPortalSession(msgspec.Struct, frozen=True):
    url: str
    expires_at: datetime | None = None


# Domain events: what webhooks and mutations publish.


class DomainEvent(msgspec.Struct, frozen=True, tag=True):
    event_id: str
    customer_id: str | None  # CRM id where known
    occurred_at: datetime


class InvoicePaid(DomainEvent, frozen=True):
    invoice: Invoice | None = None
    billing_customer_id: str | None = None
    invoice_id: str | None = None  # set by providers whose webhooks carry only the id


class InvoiceUpdated(DomainEvent, frozen=True):
    invoice: Invoice | None = None
    billing_customer_id: str | None = None
    invoice_id: str | None = None


class CustomerUpdated(DomainEvent, frozen=True):
    pass


class CustomerDeleted(DomainEvent, frozen=True):
    """The CRM deleted the customer, or merged it into `merged_into`: everything the gateway
    holds of it is erased (gateway/loaders/erasure.py)."""

    merged_into: str | None = None


class TicketUpdated(DomainEvent, frozen=True):
    ticket: Ticket | None = None
    requester_id: str | None = None
    ticket_id: str | None = None
    answered: bool = False  # an agent's public reply: the requester is notified
    # a ticket the gateway kept while the help desk was away, now delivered: the requester
    # is told it arrived
    received: bool = False


class FileUploaded(DomainEvent, frozen=True):
    file: StoredFile | None = None


class FileDeleted(DomainEvent, frozen=True):
    file_id: str = ""


class WriteQueued(DomainEvent, frozen=True):
    """A customer's write waiting for its provider: the worker delivers it."""

    write: QueuedWrite | None = None
