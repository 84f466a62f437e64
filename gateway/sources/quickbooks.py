"""The QuickBooks Online billing adapter (BILLING_SOURCE=quickbooks).

Everything is read through Intuit's query endpoint,
`GET {QUICKBOOKS_API_BASE}/v3/company/{realm}/query?query=<statement>`, with an OAuth 2.0
access token from `gateway.upstream.oauth`:

- invoices of many customers: one `select * from Invoice where CustomerRef in (...)` per 30
  customers (DESIGN 11), paged with STARTPOSITION/MAXRESULTS (1,000, Intuit's largest page).
  QuickBooks has no invoice status to filter on and no per-customer count, so each customer's
  invoices are all read, then sorted, filtered and paged here; a page's cursor is the offset
  in that list. Status, first and after never change the provider call, so every query of
  one request for the same customers shares it.
- invoices by id: `select * from Invoice where Id in (...)`, 30 a query.
- the missing link: `select * from Customer where PrimaryEmailAddr = '...'`, one per email.
- subscriptions: QuickBooks has none (recurring transactions are invoice templates, not
  subscriptions a customer holds), so every customer has [].
- the billing portal: QuickBooks has no customer portal; each invoice's `hostedUrl` is its
  own payment page (Intuit's `InvoiceLink`), so createBillingPortalSession is NOT_FOUND.

Status, as QuickBooks stores no status: voided (Intuit zeroes the amounts and notes "Voided")
is VOID; a balance of zero is PAID; anything else is OPEN, overdue or not: the due date is
in `dueDate`, and an overdue invoice is still owed, as Stripe's `open` is. QuickBooks has no
drafts and no write-off status, so DRAFT and UNCOLLECTIBLE never occur. A voided invoice
shows the zero amounts QuickBooks keeps for it. `paidAt` is the date of the latest Payment
linked to a paid invoice: one more query per 30 payments, made only for the paid invoices
on the pages being answered.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import quote

import msgspec

from gateway.domain import BillingPortalSession, Invoice, InvoiceQuery, InvoiceStatus, Page
from gateway.errors import IntegrationUnavailable, NotFound
from gateway.redis_client import RedisClient
from gateway.settings import Settings
from gateway.sources.fanout import chunks, each
from gateway.sources.money import minor_units
from gateway.sources.oauth_billing import (
    OAuthBilling,
    UnreadableInvoice,
    amount,
    oauth_credentials,
)
from gateway.upstream import UpstreamClient

__all__ = [
    "CONCURRENCY",
    "IDS_PER_QUERY",
    "MINOR_VERSION",
    "PAGE_SIZE",
    "SOURCE",
    "QuickBooksBilling",
    "invoice_from_quickbooks",
    "quote_literal",
]

log = logging.getLogger(__name__)

SOURCE = "quickbooks"
IDS_PER_QUERY = 30  # DESIGN 11: one query per 30 ids (Intuit's batch size)
PAGE_SIZE = 1000  # Intuit's largest MAXRESULTS
# Intuit retired minor versions below 75 in 2025; 75 is the base every request gets.
MINOR_VERSION = "75"
# Intuit allows 10 concurrent requests per company (realm).
CONCURRENCY = 10
# Intuit ids are positive integers, as strings; anything else is not a QuickBooks id.
_ID = re.compile(r"^[1-9][0-9]{0,19}$")


def quote_literal(value: str) -> str:
    """`value` as a string literal of Intuit's query language (backslash escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _select(entity: str, where: str, tail: str = "") -> str:
    """A query statement; every value in `where` is a `quote_literal` or a checked id."""
    return f"select * from {entity} where {where}{tail}"  # noqa: S608 - values are escaped


class QuickBooksBilling(OAuthBilling):
    """BillingSource over the QuickBooks Online accounting API."""

    name = SOURCE
    _log = log
    _ids_per_call = IDS_PER_QUERY
    _id = _ID
    _forbidden = "quickbooks refused access to the company (QUICKBOOKS_REALM_ID)"

    def __init__(self, settings: Settings, redis: RedisClient | None = None) -> None:
        """`redis` shares the OAuth grant and the rate limit with every replica."""
        credentials, realm = oauth_credentials(
            SOURCE,
            client_id=settings.quickbooks_client_id,
            client_secret=settings.quickbooks_client_secret,
            account=("QUICKBOOKS_REALM_ID", settings.quickbooks_realm_id),
            token_url=settings.quickbooks_token_url,
            refresh_token=settings.quickbooks_refresh_token,
        )
        client = UpstreamClient(
            SOURCE,
            base_url=settings.quickbooks_api_base,
            settings=settings,
            redis=redis,
            headers={"Accept": "application/json"},
        )
        super().__init__(settings, redis, client, credentials, concurrency=CONCURRENCY)
        self._query_path = f"/v3/company/{quote(realm, safe='')}/query"

    # -- BillingSource -------------------------------------------------------------------

    async def invoice_pages(
        self, queries: Sequence[InvoiceQuery]
    ) -> list[Page[Invoice] | Exception]:
        """Every invoice of the queried customers, 30 customers a query; paged here."""
        payments: dict[str, list[str]] = {}
        pages = await self._pages_from(queries, partial(self._invoices_of, payments=payments))
        shown = [i for page in pages if isinstance(page, Page) for i in page.items]
        paid = await self._paid_dates(shown, payments)
        return [
            msgspec.structs.replace(
                page, items=[msgspec.structs.replace(i, paid_at=paid.get(i.id)) for i in page.items]
            )
            if isinstance(page, Page) and any(i.id in paid for i in page.items)
            else page
            for page in pages
        ]

    async def invoices(self, ids: Sequence[str]) -> list[Invoice | Exception | None]:
        payments: dict[str, list[str]] = {}
        found = await self._invoices_from(ids, partial(self._invoices_by_id, payments=payments))
        paid = await self._paid_dates([i for i in found if isinstance(i, Invoice)], payments)
        return [
            msgspec.structs.replace(i, paid_at=paid[i.id])
            if isinstance(i, Invoice) and i.id in paid
            else i
            for i in found
        ]

    async def check(self) -> None:
        """`portal-gateway check`: a token and one query for an invoice no company has."""
        await self._query("Invoice", _select("Invoice", "Id = '0'"), "check")

    async def create_portal_session(self, billing_id: str, return_url: str) -> BillingPortalSession:
        raise NotFound(
            "QuickBooks has no customer billing portal; each invoice's hostedUrl is its "
            "payment page"
        )

    # -- calls ---------------------------------------------------------------------------

    async def _invoices_of(
        self, customers: list[str], payments: dict[str, list[str]]
    ) -> dict[str, list[Invoice]]:
        """Every invoice of up to 30 customers, newest first per customer; the payment ids
        of the paid ones go into `payments` once all are read."""
        listed = ",".join(quote_literal(c) for c in customers)
        invoices: list[Invoice] = []
        linked: dict[str, list[str]] = {}
        start = 1
        while True:
            # Ordered by a field that never changes, so no invoice moves between pages
            # while they are read.
            rows = await self._query(
                "Invoice",
                _select(
                    "Invoice",
                    f"CustomerRef in ({listed})",
                    f" orderby MetaData.CreateTime desc startposition {start} "
                    f"maxresults {PAGE_SIZE}",
                ),
                "invoices.query",
            )
            invoices.extend(self._invoices(rows, linked))
            if len(rows) < PAGE_SIZE:
                break
            start += PAGE_SIZE
        grouped: dict[str, list[Invoice]] = {}
        for invoice in sorted(invoices, key=_newest_first):
            grouped.setdefault(invoice.billing_customer_id, []).append(invoice)
        payments.update(linked)
        return grouped

    async def _invoices_by_id(
        self, ids: list[str], payments: dict[str, list[str]]
    ) -> dict[str, Invoice]:
        listed = ",".join(quote_literal(i) for i in ids)
        rows = await self._query(
            "Invoice", _select("Invoice", f"Id in ({listed})"), "invoices.retrieve"
        )
        linked: dict[str, list[str]] = {}
        found = {invoice.id: invoice for invoice in self._invoices(rows, linked)}
        payments.update(linked)
        return found

    async def _paid_dates(
        self, invoices: Sequence[Invoice], payments: Mapping[str, list[str]]
    ) -> dict[str, datetime]:
        """When each paid invoice among `invoices` was paid: the date of its latest
        payment, read from the Payments linked to it (30 a query). An invoice settled
        without a payment (a credit memo) has no such date. A failed read leaves the dates
        out rather than the invoices."""
        wanted = {
            invoice.id: payments[invoice.id]
            for invoice in invoices
            if invoice.status is InvoiceStatus.PAID and payments.get(invoice.id)
        }
        ids = sorted({p for linked in wanted.values() for p in linked}, key=int)
        if not ids:
            return {}
        dates: dict[str, datetime] = {}
        for result in await each(chunks(ids, IDS_PER_QUERY), self._payment_dates):
            if isinstance(result, Exception):
                log.warning(
                    "quickbooks: payment dates unavailable: %s",
                    result,
                    extra={"provider": SOURCE, "operation": "payments.retrieve"},
                )
                continue
            dates.update(result)
        out: dict[str, datetime] = {}
        for invoice_id, linked in wanted.items():
            known = [dates[p] for p in linked if p in dates]
            if known:
                out[invoice_id] = max(known)
        return out

    async def _payment_dates(self, ids: list[str]) -> dict[str, datetime]:
        listed = ",".join(quote_literal(i) for i in ids)
        rows = await self._query(
            "Payment", _select("Payment", f"Id in ({listed})"), "payments.retrieve"
        )
        out: dict[str, datetime] = {}
        for row in rows:
            when = _date(row.get("TxnDate"))
            if isinstance(row.get("Id"), str) and when is not None:
                out[row["Id"]] = when
        return out

    async def _billing_id_of(self, email: str) -> str | None:
        rows = await self._query(
            "Customer",
            _select("Customer", f"PrimaryEmailAddr = {quote_literal(email)}"),
            "customers.search",
        )
        ids = [
            str(row.get("Id"))
            for row in rows
            if _ID.match(str(row.get("Id")))
            and str((row.get("PrimaryEmailAddr") or {}).get("Address", "")).lower() == email.lower()
        ]
        # Several customers may share an email: the oldest is the account of record.
        return min(ids, key=int) if ids else None

    async def _query(self, entity: str, statement: str, operation: str) -> list[dict[str, Any]]:
        """The rows of one query (`entity` is the key they come under)."""
        params = {"query": statement, "minorversion": MINOR_VERSION}
        if entity == "Invoice":
            params["include"] = "invoiceLink"
        body = await self._read(self._query_path, params, operation)
        answer = body.get("QueryResponse") if isinstance(body, dict) else None
        rows = answer.get(entity, []) if isinstance(answer, dict) else None
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            log.error("quickbooks %s answered without a QueryResponse", operation)
            raise IntegrationUnavailable(
                SOURCE, "quickbooks answered something the gateway cannot read"
            )
        return rows

    def _invoices(
        self, rows: list[dict[str, Any]], payments: dict[str, list[str]]
    ) -> list[Invoice]:
        """The readable invoices of `rows`; the ids of each one's payments go into `payments`."""
        out: list[Invoice] = []
        for row, invoice in self._readable(rows, invoice_from_quickbooks, "Id"):
            out.append(invoice)
            linked = row.get("LinkedTxn")
            if isinstance(linked, list):
                payments[invoice.id] = [
                    str(txn["TxnId"])
                    for txn in linked
                    if isinstance(txn, dict)
                    and txn.get("TxnType") == "Payment"
                    and _ID.match(str(txn.get("TxnId")))
                ]
        return out

    def _fault(self, body: Any) -> dict[str, Any]:
        # Intuit's Detail can quote the statement, so the log keeps the code and the type.
        fault = body.get("Fault") if isinstance(body, dict) else None
        errors = fault.get("Error") if isinstance(fault, dict) else None
        first = (
            errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        )
        return {
            "intuit_code": str(first.get("code") or ""),
            "intuit_fault": fault.get("type") if isinstance(fault, dict) else None,
        }


def _newest_first(invoice: Invoice) -> tuple[float, int, str]:
    # Invoice date, then Intuit's id (assigned in creation order) as the tie-break.
    number = int(invoice.id) if invoice.id.isdigit() else 0
    return (-invoice.created_at.timestamp(), -number, invoice.id)


# -- QuickBooks JSON -> domain models -------------------------------------------------------


def _ref(row: Mapping[str, Any], key: str) -> str:
    ref = row.get(key)
    value = ref.get("value") if isinstance(ref, Mapping) else None
    if not isinstance(value, str) or not value:
        raise UnreadableInvoice(f"no {key}")
    return value


def _date(value: Any) -> datetime | None:
    """Intuit's dates ("2026-01-05") as midnight UTC; timestamps as they are."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _voided(row: Mapping[str, Any], total: Decimal, balance: Decimal) -> bool:
    # Voiding keeps the invoice but zeroes it and writes "Voided" into its private note;
    # QuickBooks has no other mark of it.
    note = row.get("PrivateNote")
    return total == 0 and balance == 0 and isinstance(note, str) and note.startswith("Voided")


def invoice_from_quickbooks(row: Mapping[str, Any]) -> Invoice:
    """A QuickBooks Invoice (JSON, numbers as Decimal) as the domain Invoice.

    Raises UnreadableInvoice when a field the gateway needs is missing or malformed.
    """
    invoice_id = row.get("Id")
    if not isinstance(invoice_id, str) or not _ID.match(invoice_id):
        raise UnreadableInvoice("no Id")
    currency = _ref(row, "CurrencyRef").lower()
    total = amount(row, "TotalAmt")
    balance = amount(row, "Balance")
    meta = row.get("MetaData")
    created = _date(row.get("TxnDate")) or (
        _date(meta.get("CreateTime")) if isinstance(meta, Mapping) else None
    )
    if created is None:
        raise UnreadableInvoice("no TxnDate")
    if _voided(row, total, balance):
        status = InvoiceStatus.VOID
    elif balance <= 0:
        status = InvoiceStatus.PAID
    else:
        status = InvoiceStatus.OPEN
    owed = max(balance, Decimal(0)) if status is InvoiceStatus.OPEN else Decimal(0)
    number = row.get("DocNumber")
    link = row.get("InvoiceLink")
    return Invoice(
        id=invoice_id,
        status=status,
        currency=currency,
        total=minor_units(total, currency),
        amount_due=minor_units(owed, currency),
        amount_paid=minor_units(max(total - owed, Decimal(0)), currency),
        created_at=created,
        billing_customer_id=_ref(row, "CustomerRef"),
        source=SOURCE,
        number=number if isinstance(number, str) and number else None,
        due_date=_date(row.get("DueDate")),
        paid_at=None,
        hosted_url=link if isinstance(link, str) and link.startswith("https://") else None,
        pdf_url=None,
    )
