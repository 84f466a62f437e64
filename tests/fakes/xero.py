"""A stateful fake of Xero's Accounting API over real HTTP, with Xero's rate limits.

    auth = FakeAuthorizationServer()
    fake = FakeXero(auth)                        # one organisation, TENANT_ID
    with auth.running(), fake.running():
        XERO_API_BASE = fake.url                 # served without /api.xro/2.0, as a spec
                                                 # mock does; the adapter keeps any prefix
        ada = fake.add_contact("Ada Lovelace", "ada@example.com")
        fake.add_invoice(ada, status="AUTHORISED", total="120.00", amount_paid="20.00")
        fake.minute_limit = 3                    # Xero's per-tenant limits, made small

`GET /Invoices` (ContactIDs, IDs, Statuses, where `Type=="ACCREC"`, order `Date DESC`,
page, pageSize up to 1,000) and `GET /Contacts` (searchTerm across name and email, page,
summaryOnly) answer in Xero's shape: `/Date(ms+0000)/` dates, numbers in major units, a
`pagination` object when paged. Every call needs a bearer token the authorization server
issued (401 otherwise) and `xero-tenant-id` of the connected organisation (403 otherwise).
Rate limits per tenant as Xero keeps them: `minute_limit` calls in any 60 s and `day_limit`
in 24 h; every answer carries `X-MinLimit-Remaining`, `X-DayLimit-Remaining` and
`X-AppMinLimit-Remaining`, and a call over a limit gets 429 with `Retry-After` and
`X-Rate-Limit-Problem`. A URL over 2,048 characters is refused (414), the limit the
gateway's 40-id batches stay under.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from starlette.requests import Request

from tests.fakes.oauth import FakeAuthorizationServer
from tests.fakes.provider import Answer, Handler, StatefulFake

__all__ = ["TENANT_ID", "FakeXero", "ms_date"]

TENANT_ID = "4a1b2c3d-0000-4000-8000-00000000fe01"
MAX_URL = 2048
MAX_PAGE_SIZE = 1000
_STATUSES = ("DRAFT", "SUBMITTED", "DELETED", "AUTHORISED", "PAID", "VOIDED")


def ms_date(day: date | datetime) -> str:
    """Xero's JSON date: `/Date(<ms since the epoch, UTC>+0000)/`."""
    moment = day if isinstance(day, datetime) else datetime(day.year, day.month, day.day)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"/Date({round(moment.timestamp() * 1000)}+0000)/"


def _iso(day: date) -> str:
    return f"{day.isoformat()}T00:00:00"


class FakeXero(StatefulFake):
    provider = "xero"

    def __init__(
        self,
        auth: FakeAuthorizationServer,
        *,
        tenant_id: str = TENANT_ID,
        minute_limit: int = 60,
        day_limit: int = 5000,
        latency: float = 0.0,
    ) -> None:
        self.auth = auth
        self.tenant_id = tenant_id
        self.minute_limit = minute_limit
        self.day_limit = day_limit
        self.contacts: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self._served: deque[float] = deque()  # monotonic times of admitted calls (24 h)
        self._numbers = 0
        super().__init__(latency=latency)

    # -- seeding -------------------------------------------------------------------------

    def add_contact(self, name: str, email: str | None = None, *, archived: bool = False) -> str:
        with self.lock:
            contact_id = str(uuid.uuid4())
            record: dict[str, Any] = {
                "ContactID": contact_id,
                "ContactStatus": "ARCHIVED" if archived else "ACTIVE",
                "Name": name,
                "IsSupplier": False,
                "IsCustomer": True,
                "Addresses": [],
                "Phones": [],
                "UpdatedDateUTC": ms_date(datetime(2025, 6, 1, 10, 0, tzinfo=UTC)),
                "ContactGroups": [],
                "ContactPersons": [],
                "HasAttachments": False,
                "HasValidationErrors": False,
            }
            if email is not None:
                record["EmailAddress"] = email
            self.contacts[contact_id] = record
            return contact_id

    def add_invoice(
        self,
        contact_id: str,
        *,
        status: str = "AUTHORISED",
        total: str,
        amount_paid: str = "0",
        currency: str = "NZD",
        day: date = date(2026, 1, 5),
        due: date | None = None,
        paid_on: date | None = None,
        number: str | None = None,
        kind: str = "ACCREC",
    ) -> str:
        """An invoice of `total` (major units, a decimal string). Xero's own bookkeeping
        follows: AmountDue = total - paid (0 once PAID or VOIDED)."""
        assert status in _STATUSES
        with self.lock:
            invoice_id = str(uuid.uuid4())
            self._numbers += 1
            amount = Decimal(total)
            paid = Decimal(amount_paid) if status != "PAID" else amount
            due_now = Decimal(0) if status in ("PAID", "VOIDED", "DELETED") else amount - paid
            contact = self.contacts[contact_id]
            record: dict[str, Any] = {
                "Type": kind,
                "InvoiceID": invoice_id,
                "InvoiceNumber": number or f"INV-{self._numbers:04d}",
                "Reference": "",
                "Payments": [],
                "CreditNotes": [],
                "Prepayments": [],
                "Overpayments": [],
                "AmountDue": float(due_now),
                "AmountPaid": float(paid),
                "AmountCredited": 0.0,
                "SentToContact": status not in ("DRAFT", "SUBMITTED"),
                "CurrencyRate": 1.0,
                "IsDiscounted": False,
                "HasAttachments": False,
                "HasErrors": False,
                "Contact": {
                    "ContactID": contact_id,
                    "Name": contact["Name"],
                    "Addresses": [],
                    "Phones": [],
                    "ContactGroups": [],
                    "ContactPersons": [],
                    "HasValidationErrors": False,
                },
                "DateString": _iso(day),
                "Date": ms_date(day),
                "Status": status,
                "LineAmountTypes": "Exclusive",
                "LineItems": [],
                "SubTotal": float(amount),
                "TotalTax": 0.0,
                "Total": float(amount),
                "UpdatedDateUTC": ms_date(datetime.combine(day, datetime.min.time(), UTC)),
                "CurrencyCode": currency,
            }
            if due is not None:
                record["DueDateString"] = _iso(due)
                record["DueDate"] = ms_date(due)
            if status == "PAID":
                record["FullyPaidOnDate"] = ms_date(paid_on or day)
            self.invoices[invoice_id] = record
            return invoice_id

    def reset(self) -> None:
        """Forget every record, call, fault and spent budget (a module's fake, reused)."""
        with self.lock:
            self.contacts.clear()
            self.invoices.clear()
            self.calls.clear()
            self._served.clear()
        self.clear_faults()

    # -- StatefulFake --------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, str, Handler]]:
        return [
            ("invoices", "GET", "/Invoices", self._list_invoices),
            ("contacts", "GET", "/Contacts", self._list_contacts),
        ]

    def authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bearer ") and self.auth.accepts(header.removeprefix("Bearer "))

    def error_body(self, status: int) -> Any:
        if status == 400:
            return {"ErrorNumber": 16, "Type": "QueryParseException", "Message": "Bad request"}
        titles = {
            401: ("Unauthorized", "AuthenticationUnsuccessful"),
            403: ("Forbidden", "AuthenticationUnsuccessful"),
            404: ("NotFound", "The resource you're looking for cannot be found"),
            429: ("Too Many Requests", "Rate limit exceeded"),
        }
        title, detail = titles.get(status, ("Internal Server Error", "An error occurred"))
        return {
            "Type": None,
            "Title": title,
            "Status": status,
            "Detail": detail,
            "Instance": str(uuid.uuid4()),
        }

    # -- the endpoints -------------------------------------------------------------------

    def _admit(self, request: Request) -> Answer | dict[str, str]:
        """The tenant and rate-limit checks: a refusal, or the headers of an admitted call."""
        if request.headers.get("xero-tenant-id") != self.tenant_id:
            return Answer(403, self.error_body(403))
        if len(request.url.path) + 1 + len(request.url.query) > MAX_URL:
            return Answer(414, self.error_body(414))
        now = time.monotonic()
        while self._served and self._served[0] <= now - 86_400:
            self._served.popleft()
        in_minute = [t for t in self._served if t > now - 60]
        for limit, used, problem, window_start in (
            (self.minute_limit, len(in_minute), "minute", in_minute[0] if in_minute else now),
            (self.day_limit, len(self._served), "day", self._served[0] if self._served else now),
        ):
            if used >= limit:
                wait = max(1, round(window_start + (60 if problem == "minute" else 86_400) - now))
                return Answer(
                    429,
                    self.error_body(429),
                    {
                        "Retry-After": str(wait),
                        "X-Rate-Limit-Problem": problem,
                        "X-MinLimit-Remaining": str(max(self.minute_limit - len(in_minute), 0)),
                        "X-DayLimit-Remaining": str(max(self.day_limit - len(self._served), 0)),
                    },
                )
        self._served.append(now)
        return {
            "X-MinLimit-Remaining": str(self.minute_limit - len(in_minute) - 1),
            "X-DayLimit-Remaining": str(self.day_limit - len(self._served)),
            "X-AppMinLimit-Remaining": "9999",
        }

    def _list_invoices(self, request: Request, _payload: Any) -> Answer:
        admitted = self._admit(request)
        if isinstance(admitted, Answer):
            return admitted
        params = request.query_params
        rows = list(self.invoices.values())
        if "ContactIDs" in params:
            wanted = {v.lower() for v in params["ContactIDs"].split(",") if v}
            rows = [r for r in rows if r["Contact"]["ContactID"].lower() in wanted]
        if "IDs" in params:
            wanted = {v.lower() for v in params["IDs"].split(",") if v}
            rows = [r for r in rows if r["InvoiceID"].lower() in wanted]
        if "Statuses" in params:
            statuses = set(params["Statuses"].split(","))
            if not statuses <= set(_STATUSES):
                return Answer(400, self.error_body(400))
            rows = [r for r in rows if r["Status"] in statuses]
        where = params.get("where")
        if where is not None:
            if where.replace(" ", "") not in ('Type=="ACCREC"', 'Type=="ACCPAY"'):
                return Answer(400, self.error_body(400))
            kind = where.replace(" ", "").split('"')[1]
            rows = [r for r in rows if r["Type"] == kind]
        order = params.get("order")
        if order is not None:
            if order not in ("Date DESC", "Date ASC", "Date"):
                return Answer(400, self.error_body(400))
            rows.sort(
                key=lambda r: (r["DateString"], r["InvoiceNumber"]), reverse=order.endswith("DESC")
            )
        return self._paged(params, rows, "Invoices", admitted)

    def _list_contacts(self, request: Request, _payload: Any) -> Answer:
        admitted = self._admit(request)
        if isinstance(admitted, Answer):
            return admitted
        params = request.query_params
        rows = list(self.contacts.values())
        term = params.get("searchTerm")
        if term is not None:
            needle = term.lower()
            rows = [
                r
                for r in rows
                if needle in r["Name"].lower() or needle in str(r.get("EmailAddress", "")).lower()
            ]
        return self._paged(params, rows, "Contacts", admitted)

    def _paged(
        self, params: Any, rows: list[dict[str, Any]], key: str, headers: dict[str, str]
    ) -> Answer:
        body: dict[str, Any] = {
            "Id": str(uuid.uuid4()),
            "Status": "OK",
            "ProviderName": "portal-gateway tests",
            "DateTimeUTC": ms_date(datetime.now(UTC)),
        }
        if "page" in params:
            size = int(params.get("pageSize", "100"))
            if not 1 <= size <= MAX_PAGE_SIZE:
                return Answer(400, self.error_body(400))
            page = max(int(params["page"]), 1)
            body["pagination"] = {
                "page": page,
                "pageSize": size,
                "pageCount": max((len(rows) + size - 1) // size, 1),
                "itemCount": len(rows),
            }
            rows = rows[(page - 1) * size : page * size]
        body[key] = rows
        return Answer(200, body, dict(headers))
