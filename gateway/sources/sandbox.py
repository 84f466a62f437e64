"""Sandbox providers: the embedded default. Demo data in memory, simulated latency and failure.

Each sandbox source counts the calls it receives (`calls`), so tests and the benchmark can
see how many provider calls a query made.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import msgspec

from gateway.domain import (
    BillingPortalSession,
    Customer,
    DomainEvent,
    Invoice,
    InvoicePaid,
    InvoiceQuery,
    InvoiceStatus,
    InvoiceUpdated,
    Page,
    ProfileChanges,
    Subscription,
    Ticket,
    TicketDraft,
    TicketQuery,
    TicketStatus,
    TicketUpdated,
)
from gateway.errors import IntegrationUnavailable, NotFound

__all__ = [
    "DEMO_CUSTOMER_ID",
    "SandboxBilling",
    "SandboxCrm",
    "SandboxData",
    "SandboxHelpdesk",
    "demo_data",
    "paginate",
]

DEMO_CUSTOMER_ID = "1001"
T = TypeVar("T")
_EPOCH = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

_DEMO_PEOPLE = [
    ("Ada Lovelace", "ada@example.com", "Analytical Engines Ltd", "+44 20 7946 0001"),
    ("Grace Hopper", "grace@example.com", "Cobol Systems", "+1 212 555 0102"),
    ("Alan Turing", "alan@example.com", "Bletchley Computing", "+44 20 7946 0003"),
    ("Katherine Johnson", "katherine@example.com", "Orbital Analytics", "+1 757 555 0104"),
    ("Edsger Dijkstra", "edsger@example.com", "Shortest Path BV", "+31 20 555 0105"),
]
_STATUS_CYCLE = [
    InvoiceStatus.PAID,
    InvoiceStatus.OPEN,
    InvoiceStatus.PAID,
    InvoiceStatus.DRAFT,
    InvoiceStatus.VOID,
    InvoiceStatus.UNCOLLECTIBLE,
    InvoiceStatus.PAID,
    InvoiceStatus.OPEN,
    InvoiceStatus.PAID,
    InvoiceStatus.PAID,
    InvoiceStatus.OPEN,
    InvoiceStatus.PAID,
]
_TICKET_CYCLE = [
    TicketStatus.OPEN,
    TicketStatus.SOLVED,
    TicketStatus.PENDING,
    TicketStatus.NEW,
    TicketStatus.CLOSED,
    TicketStatus.ON_HOLD,
]


class SandboxData:
    """The demo data set, mutable so mutations and tests can change it."""

    def __init__(self) -> None:
        self.customers: dict[str, Customer] = {}
        self.invoices: dict[str, Invoice] = {}
        self.subscriptions: dict[str, list[Subscription]] = {}
        self.tickets: dict[str, Ticket] = {}
        self.files: dict[str, list[tuple[str, str, bytes]]] = {}  # customer -> (name, type, body)
        self._ticket_ids = itertools.count(50_000)

    def next_ticket_id(self) -> str:
        """The id of a ticket created now (above the seeded ones)."""
        return str(next(self._ticket_ids))


def demo_data(customers: int = 60, invoices_each: int = 12, tickets_each: int = 12) -> SandboxData:
    """Deterministic demo data: the five named customers first, then generated ones."""
    data = SandboxData()
    for n in range(customers):
        crm_id = str(1001 + n)
        if n < len(_DEMO_PEOPLE):
            name, email, company, phone = _DEMO_PEOPLE[n]
        else:
            name = f"Customer {n + 1}"
            email = f"customer{n + 1}@example.com"
            company = f"Company {n + 1}"
            phone = f"+1 555 010 {n:04d}"
        billing_id = f"cus_sbx{n + 1:04d}"
        helpdesk_id = str(900_001 + n)
        data.customers[crm_id] = Customer(
            id=crm_id,
            name=name,
            email=email,
            company=company,
            phone=phone,
            billing_id=billing_id,
            helpdesk_id=helpdesk_id,
        )
        for i in range(invoices_each):
            status = _STATUS_CYCLE[(i + n) % len(_STATUS_CYCLE)]
            total = 1_000 * (i + 1) + 99 * n
            paid = total if status is InvoiceStatus.PAID else 0
            due = total - paid if status in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE) else 0
            created = _EPOCH + timedelta(days=30 * i, hours=n)
            invoice_id = f"in_sbx{n + 1:04d}{i + 1:03d}"
            data.invoices[invoice_id] = Invoice(
                id=invoice_id,
                number=f"SBX-{n + 1:04d}-{i + 1:03d}",
                status=status,
                currency="eur" if n % 3 == 2 else "usd",
                total=total,
                amount_due=due,
                amount_paid=paid,
                created_at=created,
                due_date=created + timedelta(days=14),
                paid_at=created + timedelta(days=3) if status is InvoiceStatus.PAID else None,
                hosted_url=f"https://billing.example.com/i/{invoice_id}",
                pdf_url=f"https://billing.example.com/i/{invoice_id}.pdf",
                billing_customer_id=billing_id,
                source="sandbox",
            )
        data.subscriptions[billing_id] = [
            Subscription(
                id=f"sub_sbx{n + 1:04d}",
                status="active",
                billing_customer_id=billing_id,
                plan="Pro (monthly)",
                current_period_end=_EPOCH + timedelta(days=365),
            ),
            Subscription(
                id=f"sub_sbx{n + 1:04d}old",
                status="canceled",
                billing_customer_id=billing_id,
                plan="Starter (monthly)",
                current_period_end=_EPOCH - timedelta(days=30),
                cancel_at_period_end=True,
            ),
        ]
        for i in range(tickets_each):
            ticket_id = str(10_000 + n * 100 + i)
            created = _EPOCH + timedelta(days=7 * i, hours=n)
            data.tickets[ticket_id] = Ticket(
                id=ticket_id,
                subject=f"Question {i + 1} from {name}",
                description="Where can I download last month's invoice?",
                status=_TICKET_CYCLE[(i + n) % len(_TICKET_CYCLE)],
                priority=("low", "normal", "high")[i % 3],
                created_at=created,
                updated_at=created + timedelta(hours=5),
                requester_id=helpdesk_id,
            )
        data.files[crm_id] = [
            (
                f"contract-{i + 1:02d}.pdf" if i % 2 == 0 else f"report-{i + 1:02d}.txt",
                "application/pdf" if i % 2 == 0 else "text/plain",
                f"Demo document {i + 1} for {name}\n".encode(),
            )
            for i in range(10)
        ]
    return data


def paginate(items: Sequence[T], first: int, after: str | None) -> Page[T]:
    """One page of an in-memory list; a cursor is the index of the item after it."""
    start = int(after) if after and after.isdigit() else 0
    chosen = list(items[start : start + max(first, 0)])
    end = start + len(chosen)
    return Page(
        items=chosen,
        next_cursor=str(end) if end < len(items) else None,
        total_count=len(items),
        cursors=[str(start + i + 1) for i in range(len(chosen))],
    )


class _SandboxSource:
    kind = ""

    def __init__(self, data: SandboxData, latency_ms: float = 0.0, fail: bool = False) -> None:
        self.data = data
        self.latency = latency_ms / 1000
        self.fail = fail
        self.calls: Counter[str] = Counter()
        self.name = f"sandbox-{self.kind}"

    async def _call(self, operation: str) -> None:
        self.calls[operation] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.fail:
            raise IntegrationUnavailable(self.name, f"{self.name} is unavailable (simulated)")

    async def aclose(self) -> None:
        return None


class SandboxCrm(_SandboxSource):
    kind = "crm"

    async def customers(self, ids: Sequence[str]) -> list[Customer | Exception | None]:
        await self._call("customers")
        return [self.data.customers.get(id) for id in ids]

    async def customer_ids_by_link(
        self, system: str, external_ids: Sequence[str]
    ) -> list[str | Exception | None]:
        await self._call("customer_ids_by_link")
        attribute = "billing_id" if system == "billing" else "helpdesk_id"
        index = {getattr(c, attribute): c.id for c in self.data.customers.values()}
        return [index.get(external) for external in external_ids]

    async def update_profile(self, customer_id: str, changes: ProfileChanges) -> Customer:
        await self._call("update_profile")
        current = self.data.customers.get(customer_id)
        if current is None:
            raise NotFound()
        updated = Customer(
            id=current.id,
            name=changes.name if changes.name is not None else current.name,
            email=current.email,
            company=changes.company if changes.company is not None else current.company,
            phone=changes.phone if changes.phone is not None else current.phone,
            billing_id=current.billing_id,
            helpdesk_id=current.helpdesk_id,
        )
        self.data.customers[customer_id] = updated
        return updated


class SandboxBilling(_SandboxSource):
    pages_carry_totals = True
    kind = "billing"

    def _of(self, billing_id: str, status: InvoiceStatus | None) -> list[Invoice]:
        found = [
            inv
            for inv in self.data.invoices.values()
            if inv.billing_customer_id == billing_id and (status is None or inv.status is status)
        ]
        found.sort(key=lambda inv: inv.created_at, reverse=True)
        return found

    async def invoice_pages(
        self, queries: Sequence[InvoiceQuery]
    ) -> list[Page[Invoice] | Exception]:
        await self._call("invoice_pages")
        pages: list[Page[Invoice] | Exception] = []
        for query in queries:
            pages.append(
                paginate(self._of(query.billing_id, query.status), query.first, query.after)
            )
        return pages

    async def invoice_pages_indexed(
        self, queries: Sequence[InvoiceQuery]
    ) -> list[Page[Invoice] | Exception]:
        """The sandbox has no search index: the same pages (each with its total)."""
        return await self.invoice_pages(queries)

    async def invoice_counts(self, queries: Sequence[InvoiceQuery]) -> list[int | Exception | None]:
        await self._call("invoice_counts")
        return [len(self._of(query.billing_id, query.status)) for query in queries]

    async def invoices(self, ids: Sequence[str]) -> list[Invoice | Exception | None]:
        await self._call("invoices")
        return [self.data.invoices.get(id) for id in ids]

    async def subscriptions(
        self, billing_ids: Sequence[str]
    ) -> list[list[Subscription] | Exception]:
        await self._call("subscriptions")
        return [list(self.data.subscriptions.get(b, [])) for b in billing_ids]

    async def billing_ids_by_email(self, emails: Sequence[str]) -> list[str | Exception | None]:
        await self._call("billing_ids_by_email")
        by_email = {c.email: c.billing_id for c in self.data.customers.values()}
        return [by_email.get(email) for email in emails]

    async def create_portal_session(self, billing_id: str, return_url: str) -> BillingPortalSession:
        await self._call("create_portal_session")
        return BillingPortalSession(
            url=f"https://billing.example.com/p/session/{billing_id}?return_url={return_url}",
            expires_at=datetime.now(UTC) + timedelta(minutes=5),
        )

    def apply_event(self, event: DomainEvent) -> DomainEvent:
        """Play the provider: a webhook's invoice state becomes the sandbox's own, and the
        event carries the sandbox's record (so a subscriber sees what a query shows)."""
        if not isinstance(event, InvoicePaid | InvoiceUpdated) or event.invoice is None:
            return event
        incoming = event.invoice
        current = self.data.invoices.get(incoming.id)
        if current is None:
            stored = msgspec.structs.replace(incoming, source="sandbox")
        else:
            stored = msgspec.structs.replace(
                current,
                status=incoming.status,
                total=incoming.total,
                amount_due=incoming.amount_due,
                amount_paid=incoming.amount_paid,
                paid_at=incoming.paid_at,
            )
        self.data.invoices[stored.id] = stored
        return msgspec.structs.replace(event, invoice=stored)


class SandboxHelpdesk(_SandboxSource):
    pages_carry_totals = True
    kind = "helpdesk"

    def __init__(self, data: SandboxData, latency_ms: float = 0.0, fail: bool = False) -> None:
        super().__init__(data, latency_ms, fail)
        self._created: dict[str, str] = {}  # idempotency key -> ticket id

    async def ticket_pages(self, queries: Sequence[TicketQuery]) -> list[Page[Ticket] | Exception]:
        await self._call("ticket_pages")
        pages: list[Page[Ticket] | Exception] = []
        for query in queries:
            matching = sorted(
                (
                    t
                    for t in self.data.tickets.values()
                    if t.requester_id == query.requester_id
                    and (query.status is None or t.status is query.status)
                ),
                key=lambda t: t.created_at,
                reverse=True,
            )
            pages.append(paginate(matching, query.first, query.after))
        return pages

    async def ticket_pages_indexed(
        self, queries: Sequence[TicketQuery]
    ) -> list[Page[Ticket] | Exception]:
        """The sandbox has no search index: the same pages (each with its total)."""
        return await self.ticket_pages(queries)

    async def ticket_counts(self, queries: Sequence[TicketQuery]) -> list[int | Exception | None]:
        await self._call("ticket_counts")
        return [
            sum(
                1
                for t in self.data.tickets.values()
                if t.requester_id == query.requester_id
                and (query.status is None or t.status is query.status)
            )
            for query in queries
        ]

    async def tickets(self, ids: Sequence[str]) -> list[Ticket | Exception | None]:
        await self._call("tickets")
        return [self.data.tickets.get(id) for id in ids]

    async def requester_ids_by_email(self, emails: Sequence[str]) -> list[str | Exception | None]:
        await self._call("requester_ids_by_email")
        by_email = {c.email: c.helpdesk_id for c in self.data.customers.values()}
        return [by_email.get(email) for email in emails]

    async def create_ticket(
        self, requester_id: str, draft: TicketDraft, idempotency_key: str | None
    ) -> Ticket:
        await self._call("create_ticket")
        if idempotency_key and idempotency_key in self._created:
            return self.data.tickets[self._created[idempotency_key]]
        ticket_id = self.data.next_ticket_id()
        now = datetime.now(UTC)
        ticket = Ticket(
            id=ticket_id,
            subject=draft.subject,
            description=draft.description,
            status=TicketStatus.NEW,
            priority=draft.priority or "normal",
            created_at=now,
            updated_at=now,
            requester_id=requester_id,
        )
        self.data.tickets[ticket_id] = ticket
        if idempotency_key:
            self._created[idempotency_key] = ticket_id
        return ticket

    def apply_event(self, event: DomainEvent) -> DomainEvent:
        """Play the provider: a webhook's ticket state becomes the sandbox's own."""
        if not isinstance(event, TicketUpdated) or event.ticket is None:
            return event
        incoming = event.ticket
        current = self.data.tickets.get(incoming.id)
        stored = (
            incoming
            if current is None
            else msgspec.structs.replace(
                current,
                subject=incoming.subject or current.subject,
                status=incoming.status,
                priority=incoming.priority or current.priority,
                updated_at=incoming.updated_at or current.updated_at,
            )
        )
        self.data.tickets[stored.id] = stored
        return msgspec.structs.replace(event, ticket=stored)
