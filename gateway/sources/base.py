"""The protocols every provider adapter implements.

They are batch-shaped: a method takes many keys and answers a list in key order (None for
a key the provider does not know, an Exception instance for a key that failed on its own),
so a DataLoader's batch function maps onto it directly. A failure of the whole call raises
(IntegrationUnavailable for provider trouble).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.domain import (
    BillingPortalSession,
    Customer,
    FileQuery,
    Invoice,
    InvoiceQuery,
    Page,
    ProfileChanges,
    StoredFile,
    Subscription,
    Ticket,
    TicketDraft,
    TicketQuery,
    UploadForm,
)

__all__ = ["BillingSource", "CrmSource", "FileStore", "HelpdeskSource", "Source"]


class Source(Protocol):
    name: str  # the provider, as in metrics and error extensions ("stripe", "sandbox", ...)

    async def aclose(self) -> None: ...


class CrmSource(Source, Protocol):
    async def customers(self, ids: Sequence[str]) -> list[Customer | Exception | None]:
        """Customers by CRM id."""
        ...

    async def customer_ids_by_link(
        self, system: str, external_ids: Sequence[str]
    ) -> list[str | Exception | None]:
        """CRM ids of the customers whose `system` link ("billing" or "helpdesk") is each id."""
        ...

    async def update_profile(self, customer_id: str, changes: ProfileChanges) -> Customer:
        """Write the editable fields; answers the customer as stored after the write."""
        ...


class BillingSource(Source, Protocol):
    # Whether every page of `invoice_pages` carries its total (the adapter reads a
    # customer's invoices whole); False: only where a first page holds them all.
    pages_carry_totals: bool

    async def invoice_pages(
        self, queries: Sequence[InvoiceQuery]
    ) -> list[Page[Invoice] | Exception]:
        """One page of invoices per query (one billing customer each), read-after-write
        (a customer's own portal)."""
        ...

    async def invoice_pages_indexed(
        self, queries: Sequence[InvoiceQuery]
    ) -> list[Page[Invoice] | Exception]:
        """The same pages for a view of many customers (staff): the provider's fewest calls,
        which may read a search index that lags the provider (docs/design.md section 11)."""
        ...

    async def invoice_counts(self, queries: Sequence[InvoiceQuery]) -> list[int | Exception | None]:
        """How many invoices (of the query's status) each customer has, without listing
        them; None where the provider cannot say."""
        ...

    async def invoices(self, ids: Sequence[str]) -> list[Invoice | Exception | None]:
        """Invoices by provider id, whoever owns them: callers check ownership."""
        ...

    async def subscriptions(
        self, billing_ids: Sequence[str]
    ) -> list[list[Subscription] | Exception]:
        """Every subscription (all statuses) of each billing customer."""
        ...

    async def billing_ids_by_email(self, emails: Sequence[str]) -> list[str | Exception | None]:
        """The missing-link hook: the billing customer id for a CRM record without one."""
        ...

    async def create_portal_session(
        self, billing_id: str, return_url: str
    ) -> BillingPortalSession: ...


class HelpdeskSource(Source, Protocol):
    # Whether every page of `ticket_pages` carries its total (see BillingSource).
    pages_carry_totals: bool

    async def ticket_pages(self, queries: Sequence[TicketQuery]) -> list[Page[Ticket] | Exception]:
        """One page of each requester's tickets, read-after-write (a customer's own portal)."""
        ...

    async def ticket_pages_indexed(
        self, queries: Sequence[TicketQuery]
    ) -> list[Page[Ticket] | Exception]:
        """The same pages for a view of many requesters (staff): the provider's fewest
        calls, which may read a search index that lags (docs/design.md section 11)."""
        ...

    async def ticket_counts(self, queries: Sequence[TicketQuery]) -> list[int | Exception | None]:
        """How many tickets (of the query's status) each requester has, without listing
        them; None where the provider cannot say."""
        ...

    async def tickets(self, ids: Sequence[str]) -> list[Ticket | Exception | None]: ...

    async def requester_ids_by_email(self, emails: Sequence[str]) -> list[str | Exception | None]:
        """The missing-link hook: the help-desk user id for a CRM record without one."""
        ...

    async def create_ticket(
        self, requester_id: str, draft: TicketDraft, idempotency_key: str | None
    ) -> Ticket: ...


class FileStore(Source, Protocol):
    async def file_pages(
        self, queries: Sequence[FileQuery]
    ) -> list[Page[StoredFile] | Exception]: ...

    async def files(self, ids: Sequence[str]) -> list[StoredFile | Exception | None]:
        """Files by opaque id; an id that does not decode to a stored file answers None."""
        ...

    def download_url(self, file: StoredFile, expires_in: int) -> str:
        """A signed, time-limited link; computed locally, no provider call."""
        ...

    async def request_upload(
        self, customer_id: str, name: str, content_type: str, size: int
    ) -> UploadForm: ...

    async def delete(self, file: StoredFile) -> None: ...
