"""The Xero billing adapter (BILLING_SOURCE=xero), on the Accounting API.

Every call carries the `xero-tenant-id` header (XERO_TENANT_ID) and an OAuth 2.0 access
token from `gateway.upstream.oauth`; XERO_API_BASE includes the path prefix
(`https://api.xero.com/api.xro/2.0`):

- invoices of many customers: `GET /Invoices?ContactIDs=...` with up to 40 contact ids a
  call (40 UUIDs keep the URL near 1,700 characters, under common 2,048 limits), sales
  invoices only (`where=Type=="ACCREC"`), paged with `page=` (PAGE_SIZE a page). As with
  QuickBooks, a customer's invoices are all read, then filtered and paged here (Xero has no
  per-contact count), so first, after and status never change the provider call.
- invoices by id: `GET /Invoices?IDs=...`, 40 a call.
- the missing link: `GET /Contacts?searchTerm=<email>` (Xero's own text search, so no
  value is ever spliced into a `where` expression), the exact address picked here.
- subscriptions: Xero has none (repeating invoices are templates of invoices), so [].
- the billing portal: Xero has no customer portal: createBillingPortalSession is NOT_FOUND.

Status: DRAFT and SUBMITTED (awaiting approval inside the business, not yet sent) are
DRAFT, owing nothing yet; AUTHORISED is OPEN; PAID is PAID; VOIDED is VOID; DELETED
invoices (only unsent drafts can be deleted) are hidden, as if they never existed.

Rate limits: Xero allows 60 calls a minute and 5,000 a day per tenant, and 5 at once.
The upstream limiter keeps the minute budget (RATE_LIMIT_XERO, shared through Redis); a
second limiter here keeps the day budget; a semaphore keeps 5 in flight per replica. Xero's
own signals correct the gateway's count where something else spends the same budget: a
response saying `X-MinLimit-Remaining: 0` fills the limiter's current minute, and a 429's
`Retry-After` pauses every caller on every replica for that long.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from redis.exceptions import RedisError

from gateway.domain import BillingPortalSession, Invoice, InvoiceQuery, InvoiceStatus, Page
from gateway.errors import IntegrationUnavailable, NotFound
from gateway.redis_client import RedisClient
from gateway.settings import RateLimit, Settings
from gateway.sources.money import minor_units
from gateway.sources.oauth_billing import (
    OAuthBilling,
    UnreadableInvoice,
    amount,
    oauth_credentials,
)
from gateway.upstream import RateLimiter, SlotUnavailable, UpstreamClient, parse_retry_after

__all__ = [
    "CONCURRENCY",
    "DAY_LIMIT",
    "IDS_PER_CALL",
    "PAGE_SIZE",
    "SOURCE",
    "XeroBilling",
    "invoice_from_xero",
    "parse_xero_date",
]

log = logging.getLogger(__name__)

SOURCE = "xero"
IDS_PER_CALL = 40
PAGE_SIZE = 1000  # Xero's largest pageSize: the fewest calls out of a 60-a-minute budget
CONCURRENCY = 5  # Xero's concurrent-call limit per tenant
DAY_LIMIT = RateLimit(5000, 24 * 3600.0)
# Without a Retry-After, a 429 pauses callers this long.
DEFAULT_PAUSE = 60.0

_UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
_STATUS = {
    "DRAFT": InvoiceStatus.DRAFT,
    "SUBMITTED": InvoiceStatus.DRAFT,
    "AUTHORISED": InvoiceStatus.OPEN,
    "PAID": InvoiceStatus.PAID,
    "VOIDED": InvoiceStatus.VOID,
}
# Every status but DELETED, named so Xero leaves deleted drafts out.
_LISTED = "DRAFT,SUBMITTED,AUTHORISED,PAID,VOIDED"
_SALES = 'Type=="ACCREC"'
_PAUSE_KEY = "ratelimit:xero:pause"
_REDIS_TIMEOUT = 0.5


class XeroBilling(OAuthBilling):
    """BillingSource over Xero's Accounting API."""

    name = SOURCE
    _log = log
    _ids_per_call = IDS_PER_CALL
    _id = _UUID
    _forbidden = "xero refused access to the organisation (XERO_TENANT_ID is not connected)"

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient | None = None,
        *,
        day_limit: RateLimit = DAY_LIMIT,
    ) -> None:
        """`redis` shares the grant, both budgets and the pause with every replica."""
        credentials, tenant = oauth_credentials(
            SOURCE,
            client_id=settings.xero_client_id,
            client_secret=settings.xero_client_secret,
            account=("XERO_TENANT_ID", settings.xero_tenant_id),
            token_url=settings.xero_token_url,
            refresh_token=settings.xero_refresh_token,
        )
        self._settings = settings
        self._pause = _Pause(redis, f"{settings.cache_prefix}{_PAUSE_KEY}")
        client = UpstreamClient(
            SOURCE,
            base_url=settings.xero_api_base,
            settings=settings,
            redis=redis,
            headers={"Accept": "application/json", "xero-tenant-id": tenant},
            auth=_RateSignals(self._observe),
        )
        self._day = RateLimiter(
            SOURCE,
            day_limit,
            key=f"{settings.cache_prefix}ratelimit:xero:day",
            redis=redis,
            margin=0.0,
        )
        super().__init__(settings, redis, client, credentials, concurrency=CONCURRENCY)

    # -- BillingSource -------------------------------------------------------------------

    async def invoice_pages(
        self, queries: Sequence[InvoiceQuery]
    ) -> list[Page[Invoice] | Exception]:
        """Every sales invoice of the queried contacts, 40 contacts a call; paged here."""
        return await self._pages_from(queries, self._invoices_of)

    async def invoices(self, ids: Sequence[str]) -> list[Invoice | Exception | None]:
        return await self._invoices_from(ids, self._invoices_by_id)

    async def check(self) -> None:
        """`portal-gateway check`: a token and one call for an invoice no one has."""
        await self._get("/Invoices", {"IDs": "00000000-0000-0000-0000-000000000000"}, "check")

    async def create_portal_session(self, billing_id: str, return_url: str) -> BillingPortalSession:
        raise NotFound("Xero has no customer billing portal")

    # -- calls ---------------------------------------------------------------------------

    async def _invoices_of(self, contacts: list[str]) -> dict[str, list[Invoice]]:
        """Every listed invoice of up to 40 contacts, newest first per contact."""
        invoices: list[Invoice] = []
        page = 1
        while True:
            body = await self._get(
                "/Invoices",
                {
                    "ContactIDs": ",".join(contacts),
                    "Statuses": _LISTED,
                    "where": _SALES,
                    "order": "Date DESC",
                    "page": page,
                    "pageSize": PAGE_SIZE,
                },
                "invoices.list",
            )
            rows = _rows(body, "Invoices")
            invoices.extend(self._invoices(rows))
            pagination = body.get("pagination")
            count = pagination.get("pageCount") if isinstance(pagination, dict) else None
            if len(rows) < PAGE_SIZE or (isinstance(count, int) and page >= count):
                break
            page += 1
        # UUIDs compare case-insensitively; the CRM's spelling is the key its queries use.
        grouped: dict[str, list[Invoice]] = {}
        for invoice in sorted(invoices, key=_newest_first):
            grouped.setdefault(invoice.billing_customer_id.lower(), []).append(invoice)
        return {contact: grouped.get(contact.lower(), []) for contact in contacts}

    async def _invoices_by_id(self, ids: list[str]) -> dict[str, Invoice]:
        body = await self._get("/Invoices", {"IDs": ",".join(ids)}, "invoices.retrieve")
        return {invoice.id.lower(): invoice for invoice in self._invoices(_rows(body, "Invoices"))}

    async def _billing_id_of(self, email: str) -> str | None:
        body = await self._get(
            "/Contacts", {"searchTerm": email, "summaryOnly": "true"}, "contacts.search"
        )
        matches = [
            row
            for row in _rows(body, "Contacts")
            if str(row.get("EmailAddress") or "").lower() == email.lower()
            and isinstance(row.get("ContactID"), str)
            and _UUID.match(row["ContactID"])
        ]
        # An archived contact is a customer no more; among several, the first Xero lists.
        matches.sort(key=lambda row: row.get("ContactStatus") != "ACTIVE")
        return str(matches[0]["ContactID"]) if matches else None

    async def _get(self, path: str, params: Mapping[str, Any], operation: str) -> dict[str, Any]:
        """One GET within Xero's budgets; the JSON object it answers."""
        await self._wait_for_budget()
        body = await self._read(path, params, operation)
        if not isinstance(body, dict):
            log.error("xero %s answered a body that is not a JSON object", operation)
            raise IntegrationUnavailable(SOURCE, "xero answered something the gateway cannot read")
        return body

    def _invoices(self, rows: list[dict[str, Any]]) -> list[Invoice]:
        # Bills are not the customer's invoices; deleted drafts never existed.
        sales = [r for r in rows if r.get("Type") == "ACCREC" and r.get("Status") != "DELETED"]
        return [invoice for _, invoice in self._readable(sales, invoice_from_xero, "InvoiceID")]

    def _fault(self, body: Any) -> dict[str, Any]:
        # Xero's Message can quote the request's values: the log keeps the type and number.
        detail = body if isinstance(body, dict) else {}
        return {
            "xero_type": detail.get("Type") or detail.get("Title"),
            "xero_error": detail.get("ErrorNumber"),
        }

    async def _wait_for_budget(self) -> None:
        """Wait out a pause Xero asked for and take a slot of the day's budget, or raise
        IntegrationUnavailable (with retryAfter) when that would outlast the deadline."""
        budget = self._settings.upstream_timeout
        paused = await self._pause.remaining()
        if paused > 0:
            if paused >= budget:
                raise IntegrationUnavailable(
                    SOURCE, "xero's rate limit is spent; try again later", retry_after=paused
                )
            await asyncio.sleep(paused)
        try:
            wait = await self._day.reserve(max_wait=budget)
        except SlotUnavailable as exc:
            raise IntegrationUnavailable(
                SOURCE, "xero's daily request budget is spent", retry_after=exc.wait
            ) from None
        if wait > 0:
            await asyncio.sleep(wait)

    async def _observe(self, response: httpx.Response) -> None:
        """Xero's view of the budget, from every answer (retried attempts included)."""
        headers = response.headers
        if response.status_code == 429:
            pause = parse_retry_after(headers.get("retry-after")) or DEFAULT_PAUSE
            log.warning(
                "xero is rate limiting the gateway; pausing calls for %.0f s",
                pause,
                extra={"provider": SOURCE, "problem": headers.get("x-rate-limit-problem")},
            )
            await self._pause.hold(pause)
            return
        remaining = headers.get("x-minlimit-remaining")
        if remaining is not None and remaining.strip() == "0":
            # Something else spends this tenant's minute too (another deployment, a
            # restart that lost the limiter's log): count the minute as full here, so the
            # limiter waits for its oldest call to leave the window instead of earning 429s.
            # When the gateway alone spent it, the window is already full and this is free.
            limiter = self._client.limiter
            for _ in range(limiter.limit.calls):
                try:
                    await limiter.reserve(max_wait=0.0)
                except SlotUnavailable:
                    break


class _RateSignals(httpx.Auth):
    """Shows the adapter every provider answer, 429s included, before the upstream client
    decides on it: the only per-attempt hook the client offers. Authenticates nothing."""

    def __init__(self, observe: Callable[[httpx.Response], Awaitable[None]]) -> None:
        self._observe = observe

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        response = yield request
        await self._observe(response)


class _Pause:
    """ "No call to Xero before T", shared by every replica (a Redis key that expires at T),
    or kept in the process without Redis or while it fails."""

    _EXTEND = """
    local left = redis.call('PTTL', KEYS[1])
    if left < tonumber(ARGV[1]) then
      redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
    end
    return 1
    """

    def __init__(self, redis: RedisClient | None, key: str) -> None:
        self._redis = redis
        self._key = key
        self._extend = redis.register_script(self._EXTEND) if redis is not None else None
        self._until = 0.0  # time.monotonic() of the end of the local pause

    async def hold(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._until = max(self._until, loop.time() + seconds)
        if self._extend is None:
            return
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT):
                await self._extend(keys=[self._key], args=[max(round(seconds * 1000), 1)])
        except (RedisError, OSError, TimeoutError):
            log.warning("xero pause not shared: Redis failed", extra={"provider": SOURCE})

    async def remaining(self) -> float:
        """Seconds until calls may go out again (0 when they may now)."""
        local = max(self._until - asyncio.get_running_loop().time(), 0.0)
        if self._redis is None:
            return local
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT):
                left_ms = await self._redis.pttl(self._key)
        except (RedisError, OSError, TimeoutError):
            return local
        return max(local, left_ms / 1000 if left_ms > 0 else 0.0)


def _rows(body: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    rows = body.get(key, [])
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        log.error("xero answered without a %s list", key)
        raise IntegrationUnavailable(SOURCE, "xero answered something the gateway cannot read")
    return rows


def _newest_first(invoice: Invoice) -> tuple[float, str]:
    return (-invoice.created_at.timestamp(), invoice.number or invoice.id)


# -- Xero JSON -> domain models ---------------------------------------------------------


def parse_xero_date(value: Any) -> datetime | None:
    """Xero's dates: `/Date(1539993600000+0000)/` (milliseconds since the epoch, UTC; the
    offset only says where it was entered) and ISO 8601 (`2018-10-20T00:00:00`, without a
    zone meaning UTC). None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    match = _MS_DATE.match(value)
    if match is not None:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(match.group(1)))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def invoice_from_xero(row: Mapping[str, Any]) -> Invoice:
    """A Xero sales invoice (JSON, numbers as Decimal) as the domain Invoice.

    Raises UnreadableInvoice when a field the gateway needs is missing or malformed, or the
    status is one the gateway does not show (DELETED).
    """
    invoice_id = row.get("InvoiceID")
    if not isinstance(invoice_id, str) or not _UUID.match(invoice_id):
        raise UnreadableInvoice("no InvoiceID")
    status = _STATUS.get(str(row.get("Status")))
    if status is None:
        raise UnreadableInvoice(f"status {row.get('Status')!r}")
    contact = row.get("Contact")
    contact_id = contact.get("ContactID") if isinstance(contact, Mapping) else None
    if not isinstance(contact_id, str) or not contact_id:
        raise UnreadableInvoice("no Contact.ContactID")
    currency = row.get("CurrencyCode")
    if not isinstance(currency, str) or len(currency) != 3:
        raise UnreadableInvoice("no CurrencyCode")
    currency = currency.lower()
    created = parse_xero_date(row.get("Date")) or parse_xero_date(row.get("DateString"))
    if created is None:
        raise UnreadableInvoice("no Date")
    total = amount(row, "Total")
    if status is InvoiceStatus.OPEN:
        owed, paid = amount(row, "AmountDue"), amount(row, "AmountPaid")
    elif status is InvoiceStatus.PAID:
        owed, paid = Decimal(0), amount(row, "AmountPaid")
    else:  # a draft owes nothing yet; a voided invoice owes nothing and has no payments
        owed, paid = Decimal(0), Decimal(0)
    number = row.get("InvoiceNumber")
    return Invoice(
        id=invoice_id,
        status=status,
        currency=currency,
        total=minor_units(total, currency),
        amount_due=minor_units(max(owed, Decimal(0)), currency),
        amount_paid=minor_units(max(paid, Decimal(0)), currency),
        created_at=created,
        billing_customer_id=contact_id,
        source=SOURCE,
        number=number if isinstance(number, str) and number else None,
        due_date=parse_xero_date(row.get("DueDate")) or parse_xero_date(row.get("DueDateString")),
        paid_at=(
            parse_xero_date(row.get("FullyPaidOnDate")) if status is InvoiceStatus.PAID else None
        ),
        # Xero's online invoice link costs a call per invoice, and its PDF needs the bearer.
        hosted_url=None,
        pdf_url=None,
    )
