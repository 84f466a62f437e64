"""The Stripe billing adapter (BILLING_SOURCE=stripe), on the official SDK.

The SDK builds every request and parses every answer but the invoice search's; its HTTP
goes through `UpstreamHTTPClient`, which hands each request to the gateway's
`UpstreamClient` (the search goes there directly). So one policy decides retries (the
SDK's own are off: `max_network_retries=0`), and every call counts against Stripe's
breaker, the shared rate limit and the upstream metrics.

Reads go through the SDK's `raw_request_async` and stay dicts (see `_get` for the measured
reason), except the invoice search of staff views, which the upstream client sends and
msgspec decodes without the SDK (see `_search_page`); the portal session uses the typed
service. Only fields that are stable across API
versions are read (DESIGN section 11). A customer's own invoices are one
`GET /v1/invoices?customer=` per customer (read-after-write: what a webhook changed shows at
once); a view of many customers (`invoice_pages_indexed`) reads Stripe's invoice search,
`customer:'a' OR customer:'b' ...` in as few queries as Stripe's clause limit allows, which
lags Stripe by up to a minute (docs/design.md section 11). A page's cursors are the invoice
ids (Stripe's `starting_after`) on both paths, so a second page always comes from the list.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
import stripe

from gateway.domain import (
    BillingPortalSession,
    Invoice,
    InvoiceQuery,
    InvoiceStatus,
    Page,
    Subscription,
)
from gateway.errors import BadUserInput, IntegrationUnavailable, NotFound
from gateway.redis_client import RedisClient
from gateway.settings import Settings
from gateway.sources.fanout import each, fanout_limit, filled, spread
from gateway.upstream import BreakerState, UpstreamClient, parse_retry_after

__all__ = [
    "SEARCH_CLAUSES_MAX",
    "SEARCH_FROM",
    "SOURCE",
    "StripeBilling",
    "UpstreamHTTPClient",
    "invoice_from_stripe",
    "subscription_from_stripe",
]

log = logging.getLogger(__name__)

SOURCE = "stripe"
MAX_LIMIT = 100  # Stripe's largest page
# Stripe's search: at most 10 clauses in one query (its search query language), a query of
# at most 5,000 characters (the API's maxLength), pages of at most 100 followed by
# `next_page`. A view of at least SEARCH_FROM customers reads the search; fewer, the lists.
SEARCH_CLAUSES_MAX = 10
SEARCH_QUERY_MAX = 5000
SEARCH_FROM = 5
# Pages of one search query followed before its customers are read from the lists instead
# (10 customers with more than 500 invoices between them).
SEARCH_PAGES_MAX = 5
# Subscriptions are read whole (status=all); a customer with more than this many pages of
# them is not a portal customer, and the cap keeps one field from costing unbounded calls.
MAX_SUBSCRIPTION_PAGES = 10
# Stripe lets a portal session URL be opened for five minutes after it is created.
PORTAL_URL_TTL = timedelta(minutes=5)

_ID = re.compile(r"^[A-Za-z0-9_]{1,255}$")
_STATUSES = {status.value.lower(): status for status in InvoiceStatus}
# What is owed now (DESIGN 11): a draft is not a bill yet; paid and void owe nothing.
_OWES = frozenset({InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE})

V = TypeVar("V")

# The operation of the SDK call in progress, for the upstream client's metrics and logs.
_operation: ContextVar[str] = ContextVar("stripe_operation", default="request")


class UnreadableAnswer(Exception):
    """A Stripe object without a field the gateway needs."""


class _SearchedInvoice(msgspec.Struct):
    """The fields of an invoice the gateway reads (DESIGN 11); the rest is skipped unread."""

    id: Any = None
    status: Any = None
    currency: Any = None
    total: Any = None
    amount_due: Any = None
    amount_paid: Any = None
    amount_remaining: Any = None
    created: Any = None
    due_date: Any = None
    status_transitions: Any = None
    hosted_invoice_url: Any = None
    invoice_pdf: Any = None
    customer: Any = None
    number: Any = None


class _SearchResult(msgspec.Struct):
    data: list[_SearchedInvoice]
    has_more: bool = False
    next_page: str | None = None


class _StripeError(msgspec.Struct):
    type: str | None = None
    code: str | None = None
    param: str | None = None


class _ErrorAnswer(msgspec.Struct):
    error: _StripeError | None = None


_search_result = msgspec.json.Decoder(_SearchResult)
_error_answer = msgspec.json.Decoder(_ErrorAnswer)


class UpstreamHTTPClient(stripe.HTTPClient):
    """The SDK's HTTP client, delegating every request to an `UpstreamClient`.

    The SDK's retry loop still runs around `request_async`, but with
    `max_network_retries=0` it makes exactly one call; provider failures surface as
    IntegrationUnavailable from the upstream client, which the SDK lets through untouched.
    """

    name = "portal-gateway-upstream"

    def __init__(self, upstream: UpstreamClient) -> None:
        super().__init__()
        self._upstream = upstream

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        send = dict(headers)
        # Passed on as the upstream client's idempotency key: that is what makes a POST
        # safe for it to retry, and it sends the header on every attempt.
        key = send.pop("Idempotency-Key", None)
        response = await self._upstream.request(
            method,
            url,
            operation=_operation.get(),
            content=post_data,
            headers=send,
            idempotency_key=key,
        )
        return response.content, response.status_code, response.headers

    async def request_stream_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[AsyncIterator[bytes], int, Mapping[str, str]]:
        content, status, response_headers = await self.request_async(
            method, url, headers, post_data
        )
        return _chunks(content), status, response_headers

    def sleep_async(self, secs: float) -> Awaitable[None]:
        return asyncio.sleep(secs)

    async def close_async(self) -> None:
        await self._upstream.aclose()


async def _chunks(content: bytes) -> AsyncIterator[bytes]:
    yield content


class StripeBilling:
    """BillingSource over Stripe's API."""

    name = SOURCE
    pages_carry_totals = False  # a list page has no total (a whole first page counts itself)

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient | None = None,
        *,
        upstream: UpstreamClient | None = None,
    ) -> None:
        """`redis` shares the rate limit across replicas; `upstream` replaces the client (tests)."""
        if settings.stripe_api_key is None:
            raise ValueError("BILLING_SOURCE=stripe needs STRIPE_API_KEY")
        self._upstream = upstream or UpstreamClient(
            SOURCE, base_url=settings.stripe_api_base, settings=settings, redis=redis
        )
        # Calls in flight for one batch: as many as Stripe's shared budget allows in a second,
        # at most the upstream pool (RATE_LIMIT_STRIPE; DESIGN 8).
        self._fanout = fanout_limit(settings, SOURCE)
        # Invoices per customer in this process's last search: how many customers one query
        # can carry and still fit one page of 100 (one round trip, not two in a row).
        self._per_customer = 10.0
        # The invoice search is read without the SDK (see `_search_page`): its headers.
        self._search_headers = {
            "Authorization": f"Bearer {settings.stripe_api_key.get_secret_value()}",
            "Stripe-Version": settings.stripe_api_version or stripe.api_version,
        }
        self._client = stripe.StripeClient(
            settings.stripe_api_key.get_secret_value(),
            stripe_version=settings.stripe_api_version,  # None: the SDK's pinned version
            base_addresses={"api": settings.stripe_api_base.rstrip("/")},
            http_client=UpstreamHTTPClient(self._upstream),
            max_network_retries=0,
        )

    @property
    def breaker_state(self) -> BreakerState:
        return self._upstream.breaker_state

    async def aclose(self) -> None:
        await self._upstream.aclose()

    # -- BillingSource -------------------------------------------------------------------

    async def invoice_pages(
        self, queries: Sequence[InvoiceQuery]
    ) -> list[Page[Invoice] | Exception]:
        """One `GET /v1/invoices` per query, as many at once as Stripe's budget allows."""
        return await each(queries, self._invoice_page, self._fanout)

    async def invoice_pages_indexed(
        self, queries: Sequence[InvoiceQuery]
    ) -> list[Page[Invoice] | Exception]:
        """First pages of many customers from Stripe's invoice search (lags up to a minute);
        later pages, and views of fewer than SEARCH_FROM customers, from the lists."""
        wanted = [
            q.billing_id
            for q in queries
            if q.after is None and q.first > 0 and _ID.match(q.billing_id)
        ]
        customers = list(dict.fromkeys(wanted))
        if len(customers) < SEARCH_FROM:
            return await self.invoice_pages(queries)
        found = await self._searched(customers)
        out: list[Page[Invoice] | Exception | None] = []
        listed: list[int] = []
        for query in queries:
            invoices = found.get(query.billing_id) if query.after is None else None
            if invoices is None:
                listed.append(len(out))
                out.append(None)
            elif isinstance(invoices, Exception):
                out.append(invoices)
            else:
                out.append(_searched_page(query, invoices))
        if listed:
            pages = await self.invoice_pages([queries[i] for i in listed])
            for position, page in zip(listed, pages, strict=True):
                out[position] = page
        return filled(out)

    async def invoice_counts(self, queries: Sequence[InvoiceQuery]) -> list[int | Exception | None]:
        """How many invoices each customer has (of the query's status): the search's
        `total_count` of `customer:'id'`, one call each, with the search's lag."""
        return await each(queries, self._invoice_count, self._fanout)

    async def invoices(self, ids: Sequence[str]) -> list[Invoice | Exception | None]:
        return await each(ids, self._invoice, self._fanout)

    async def subscriptions(
        self, billing_ids: Sequence[str]
    ) -> list[list[Subscription] | Exception]:
        return await each(billing_ids, self._subscriptions_of, self._fanout)

    async def billing_ids_by_email(self, emails: Sequence[str]) -> list[str | Exception | None]:
        return await each(emails, self._billing_id_of, self._fanout)

    async def create_portal_session(self, billing_id: str, return_url: str) -> BillingPortalSession:
        """`POST /v1/billing_portal/sessions` with an idempotency key of its own."""
        if not _ID.match(billing_id):
            raise NotFound("no billing account for this customer")
        key = f"portal-gateway-{uuid.uuid4()}"
        session = await self._call(
            "billing_portal.sessions.create",
            lambda: self._client.v1.billing_portal.sessions.create_async(
                {"customer": billing_id, "return_url": return_url},
                {"idempotency_key": key},
            ),
            fields={"return_url": ("returnUrl", "returnUrl was refused by the billing provider")},
        )
        if session is None:
            raise NotFound("no billing account for this customer")
        data = session.to_dict()
        url = data.get("url")
        if not isinstance(url, str) or not url.startswith("https://"):
            raise _unreadable("billing_portal.sessions.create")
        created = _time(data.get("created")) or datetime.now(UTC)
        return BillingPortalSession(url=url, expires_at=created + PORTAL_URL_TTL)

    # -- one call each ---------------------------------------------------------------------

    async def _invoice_page(self, query: InvoiceQuery) -> Page[Invoice]:
        if query.after is not None and not _ID.match(query.after):
            raise BadUserInput("after must be a cursor from a previous page", field="after")
        if not _ID.match(query.billing_id) or query.first <= 0:
            return Page(items=[], next_cursor=None, total_count=None if query.first <= 0 else 0)
        params: dict[str, Any] = {
            "customer": query.billing_id,
            "limit": min(query.first, MAX_LIMIT),
        }
        if query.status is not None:
            params["status"] = query.status.value.lower()
        if query.after is not None:
            params["starting_after"] = query.after
        listed = await self._get(
            "invoices.list",
            "/v1/invoices",
            params,
            fields={"starting_after": ("after", "after must be a cursor from a previous page")},
        )
        if listed is None:  # the customer is gone from Stripe: nothing to show
            return Page(items=[], next_cursor=None, total_count=0)
        items: list[Invoice] = []
        for data in _list_data(listed, "invoices.list"):
            invoice = _parse(invoice_from_stripe, data, "invoices.list")
            if invoice is None:
                continue
            if invoice.billing_customer_id != query.billing_id:
                # never show an invoice on the wrong customer's page, whatever Stripe said
                log.error("stripe listed another customer's invoice; dropped it")
                continue
            items.append(invoice)
        more = listed.get("has_more") is True and bool(items)
        whole = query.after is None and not more
        return Page(
            items=items,
            next_cursor=items[-1].id if more else None,
            total_count=len(items) if whole else None,
            cursors=[invoice.id for invoice in items],
        )

    async def _searched(self, customers: list[str]) -> dict[str, list[Invoice] | Exception]:
        """Every invoice of each customer, newest first, from as few search queries as the
        clause limit and one page per query allow; a customer left out is to be listed."""
        per_query = max(1, min(SEARCH_CLAUSES_MAX, int(MAX_LIMIT // max(self._per_customer, 1.0))))
        groups = spread(customers, per_query)
        answers = await each(groups, self._search_group, self._fanout)
        found: dict[str, list[Invoice] | Exception] = {}
        seen = 0
        for group, answer in zip(groups, answers, strict=True):
            if isinstance(answer, Exception):
                found.update(dict.fromkeys(group, answer))
            elif answer is not None:
                found.update(answer)
                seen += sum(len(invoices) for invoices in answer.values())
        searched = sum(len(g) for g, a in zip(groups, answers, strict=True) if isinstance(a, dict))
        if searched:
            self._per_customer = max(1.0, seen / searched)
        return found

    async def _search_group(self, customers: list[str]) -> dict[str, list[Invoice]] | None:
        """One search query over `customers` (at most SEARCH_CLAUSES_MAX), paged through;
        None when it has more than SEARCH_PAGES_MAX pages."""
        query = " OR ".join(f"customer:'{customer}'" for customer in customers)
        if len(query) > SEARCH_QUERY_MAX:  # ids of 255 characters: the lists, then
            return None
        found: dict[str, list[Invoice]] = {customer: [] for customer in customers}
        params: dict[str, Any] = {"query": query, "limit": MAX_LIMIT}
        for _page in range(SEARCH_PAGES_MAX):
            listed = await self._search_page(params)
            for searched in listed.data:
                data = msgspec.structs.asdict(searched)
                invoice = _parse(invoice_from_stripe, data, "invoices.search")
                if invoice is not None and invoice.billing_customer_id in found:
                    found[invoice.billing_customer_id].append(invoice)
            following = listed.next_page
            if not listed.has_more or not following:
                for invoices in found.values():
                    # the lists' order: newest first (the sort is stable: Stripe's order
                    # stands among invoices of the same second)
                    invoices.sort(key=lambda invoice: invoice.created_at, reverse=True)
                return found
            params["page"] = following
        return None

    async def _search_page(self, params: dict[str, Any]) -> _SearchResult:
        """One page of `GET /v1/invoices/search`, sent by the upstream client and decoded
        with msgspec, not through the SDK: the SDK parses every field of every invoice
        (json.loads into OrderedDicts, ~4.5 KB an invoice) and formats its log lines of the
        whole body, which for a staff page's ~600 invoices cost more CPU than the rest of
        the page (docs/design.md section 12). Same client, policy and metrics as the SDK's
        calls; Stripe's errors mapped as `_call` maps the SDK's."""
        operation = "invoices.search"
        response = await self._upstream.request(
            "GET",
            "/v1/invoices/search",
            operation=operation,
            params=params,
            headers=self._search_headers,
        )
        if response.status_code == 200:
            try:
                return _search_result.decode(response.content)
            except msgspec.DecodeError:
                raise _unreadable(operation) from None
        try:
            error = _error_answer.decode(response.content).error or _StripeError()
        except msgspec.DecodeError:
            error = _StripeError()
        log.log(
            logging.ERROR,
            "stripe %s failed: HTTP %d",
            operation,
            response.status_code,
            extra={
                "provider": SOURCE,
                "operation": operation,
                "status": response.status_code,
                "stripe_code": error.code,
                "stripe_param": error.param,
                "stripe_request_id": response.headers.get("request-id"),
            },
        )
        if response.status_code in (401, 403):
            raise IntegrationUnavailable(
                SOURCE, "stripe refused the gateway's credentials", retryable=False
            )
        raise IntegrationUnavailable(
            SOURCE, "stripe refused the gateway's request", retryable=False
        )

    async def _invoice_count(self, query: InvoiceQuery) -> int | None:
        if not _ID.match(query.billing_id):
            return 0
        clause = f"customer:'{query.billing_id}'"
        if query.status is not None:
            clause += f" AND status:'{query.status.value.lower()}'"
        params: dict[str, Any] = {"query": clause, "limit": 1, "expand": ["total_count"]}
        listed = await self._get("invoices.search", "/v1/invoices/search", params)
        if listed is None:
            return 0
        total = listed.get("total_count")
        return total if isinstance(total, int) and not isinstance(total, bool) else None

    async def _invoice(self, invoice_id: str) -> Invoice | None:
        if not _ID.match(invoice_id):  # also what keeps the id a single path segment
            return None
        found = await self._get("invoices.retrieve", f"/v1/invoices/{invoice_id}", {})
        if found is None:
            return None
        return _parse(invoice_from_stripe, found, "invoices.retrieve")

    async def _subscriptions_of(self, billing_id: str) -> list[Subscription]:
        if not _ID.match(billing_id):
            return []
        found: list[Subscription] = []
        after: str | None = None
        for _page in range(MAX_SUBSCRIPTION_PAGES):
            params: dict[str, Any] = {"customer": billing_id, "status": "all", "limit": MAX_LIMIT}
            if after is not None:
                params["starting_after"] = after
            listed = await self._get("subscriptions.list", "/v1/subscriptions", params)
            if listed is None:
                return found
            objects = _list_data(listed, "subscriptions.list")
            for data in objects:
                subscription = _parse(subscription_from_stripe, data, "subscriptions.list")
                if subscription is not None and subscription.billing_customer_id == billing_id:
                    found.append(subscription)
            if listed.get("has_more") is not True or not objects:
                return found
            after = str(objects[-1].get("id"))
        log.warning(
            "stripe customer has more than %d subscriptions; the rest are not shown",
            MAX_SUBSCRIPTION_PAGES * MAX_LIMIT,
        )
        return found

    async def _billing_id_of(self, email: str) -> str | None:
        if "@" not in email or len(email) > 512:
            return None
        listed = await self._get("customers.list", "/v1/customers", {"email": email, "limit": 2})
        customers = _list_data(listed, "customers.list") if listed is not None else []
        if not customers:
            return None
        if len(customers) > 1:
            # Linking by email is a guess; with two candidates it would be a coin toss
            # between two people's invoices. The CRM link must say which one.
            log.warning("several stripe customers share one email; not linking by email")
            return None
        customer_id = customers[0].get("id")
        return customer_id if isinstance(customer_id, str) and _ID.match(customer_id) else None

    async def _get(
        self,
        operation: str,
        path: str,
        params: dict[str, Any],
        *,
        fields: Mapping[str, tuple[str, str]] | None = None,
    ) -> dict[str, Any] | None:
        """A GET through the SDK's raw request: the SDK encodes the request, authenticates,
        sends the API version and raises its typed errors; the answer stays a dict.

        The typed service methods would build a StripeObject tree of every answer (an
        invoice list carries lines, tax and payment settings): measured at 7-8 ms of CPU per
        five-invoice page against 2 ms for the whole raw call, for fields never read.
        """
        answer = await self._call(operation, lambda: self._raw_get(path, params), fields=fields)
        if answer is None:  # Stripe: no such object
            return None
        (data,) = answer
        if not isinstance(data, dict):
            raise _unreadable(operation)
        return data

    async def _raw_get(self, path: str, params: dict[str, Any]) -> tuple[Any]:
        """What `raw_request_async("get", ...)` answers as `.data`, in a 1-tuple (a JSON
        null is not "no such object").

        The SDK parses the answer (json.loads with OrderedDict pairs, in StripeResponse)
        and raises its typed error for anything but a 2xx of JSON. Its parse costs more
        than orjson's, but no public hook of the SDK takes another parser (DESIGN 12).
        """
        response = await self._client.raw_request_async("get", path, **params)
        return (response.data,)

    # -- errors -------------------------------------------------------------------------

    async def _call(
        self,
        operation: str,
        call: Callable[[], Awaitable[V]],
        *,
        fields: Mapping[str, tuple[str, str]] | None = None,
    ) -> V | None:
        """Run one SDK call as `operation`: None when Stripe says the object does not exist.

        `fields` maps a Stripe parameter that carries the caller's input to the GraphQL
        argument and message of the BAD_USER_INPUT that Stripe refusing it becomes.
        """
        token = _operation.set(operation)
        try:
            return await call()
        except stripe.InvalidRequestError as exc:
            if fields and exc.param in fields:
                field, message = fields[exc.param]
                _log_refusal(operation, exc, logging.INFO)
                raise BadUserInput(message, field=field) from None
            if exc.code == "resource_missing":
                return None
            _log_refusal(operation, exc, logging.ERROR)
            raise IntegrationUnavailable(
                SOURCE, "stripe refused the gateway's request", retryable=False
            ) from None
        except stripe.StripeError as exc:
            raise _unavailable(operation, exc) from None
        finally:
            _operation.reset(token)


def _unavailable(operation: str, exc: stripe.StripeError) -> Exception:
    """The gateway error for a Stripe error other than an invalid request."""
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        _log_refusal(operation, exc, logging.ERROR)
        return IntegrationUnavailable(
            SOURCE, "stripe refused the gateway's credentials", retryable=False
        )
    if isinstance(exc, stripe.RateLimitError):
        _log_refusal(operation, exc, logging.WARNING)
        headers = exc.headers or {}
        return IntegrationUnavailable(
            SOURCE,
            "stripe is rate limiting the gateway",
            retry_after=parse_retry_after(headers.get("retry-after") or headers.get("Retry-After")),
        )
    if isinstance(exc, stripe.CardError):
        _log_refusal(operation, exc, logging.INFO)
        return BadUserInput("the payment method was declined")
    if isinstance(exc, stripe.IdempotencyError):
        _log_refusal(operation, exc, logging.ERROR)
        return IntegrationUnavailable(
            SOURCE, "stripe refused the gateway's request", retryable=False
        )
    # APIError (a 5xx the SDK saw, or a body that is not JSON), connection errors, the rest
    _log_refusal(operation, exc, logging.WARNING)
    return IntegrationUnavailable(SOURCE, "stripe answered with an error")


def _log_refusal(operation: str, exc: stripe.StripeError, level: int) -> None:
    # Stripe's messages can quote the (masked) key or the request's values: the log gets
    # the error's type, code, parameter and Stripe's request id, never the message.
    log.log(
        level,
        "stripe %s failed: %s",
        operation,
        type(exc).__name__,
        extra={
            "provider": SOURCE,
            "operation": operation,
            "status": exc.http_status,
            "stripe_code": exc.code,
            "stripe_param": getattr(exc, "param", None),
            "stripe_request_id": exc.request_id,
        },
    )


def _searched_page(query: InvoiceQuery, invoices: list[Invoice]) -> Page[Invoice]:
    """A customer's first page out of all its invoices, as the list would answer it."""
    if query.status is not None:
        invoices = [invoice for invoice in invoices if invoice.status is query.status]
    items = invoices[: query.first]
    more = len(invoices) > len(items)
    return Page(
        items=items,
        next_cursor=items[-1].id if more and items else None,
        total_count=len(invoices),
        cursors=[invoice.id for invoice in items],
    )


def _list_data(listed: Mapping[str, Any], operation: str) -> list[Mapping[str, Any]]:
    """The objects of a Stripe list answer."""
    data = listed.get("data")
    if not isinstance(data, list):
        raise _unreadable(operation)
    return [obj for obj in data if isinstance(obj, Mapping)]


def _unreadable(operation: str) -> IntegrationUnavailable:
    log.error("stripe %s answered an object the gateway cannot read", operation)
    return IntegrationUnavailable(SOURCE, "stripe answered something the gateway cannot read")


def _parse(
    parse: Callable[[Mapping[str, Any]], V], data: Mapping[str, Any], operation: str
) -> V | None:
    """`parse(data)`, or None (logged) for an object the gateway cannot read."""
    try:
        return parse(data)
    except UnreadableAnswer as exc:
        log.warning(
            "stripe %s: skipped an object: %s",
            operation,
            exc,
            extra={"provider": SOURCE, "operation": operation, "object_id": data.get("id")},
        )
        return None


# -- Stripe objects -> domain models ------------------------------------------------------


def _time(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):  # a time no calendar has: garbage
        raise UnreadableAnswer(f"{value} is not a unix time") from None


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnreadableAnswer(f"'{key}' is not an integer")
    return value


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _customer_id(data: Mapping[str, Any]) -> str:
    customer = data.get("customer")
    if isinstance(customer, Mapping):  # expanded
        customer = customer.get("id")
    if not isinstance(customer, str) or not customer:
        raise UnreadableAnswer("no customer")
    return customer


def invoice_from_stripe(data: Mapping[str, Any]) -> Invoice:
    """A Stripe invoice (as a dict) as the domain Invoice; raises UnreadableAnswer."""
    invoice_id = _str(data.get("id"))
    if invoice_id is None:
        raise UnreadableAnswer("no id")
    status = _STATUSES.get(str(data.get("status") or ""))
    if status is None:
        raise UnreadableAnswer(f"unknown status {data.get('status')!r}")
    created = _time(data.get("created"))
    if created is None:
        raise UnreadableAnswer("no creation time")
    currency = _str(data.get("currency"))
    if currency is None:
        raise UnreadableAnswer("no currency")
    remaining = data.get("amount_remaining")
    if remaining is None:  # not expected from Stripe; the older equivalent
        remaining = data.get("amount_due")
    transitions = data.get("status_transitions")
    paid_at = transitions.get("paid_at") if isinstance(transitions, Mapping) else None
    return Invoice(
        id=invoice_id,
        status=status,
        currency=currency.lower(),
        total=_int(data, "total"),
        amount_due=_int({"amount_remaining": remaining}, "amount_remaining")
        if status in _OWES
        else 0,
        amount_paid=_int(data, "amount_paid"),
        created_at=created,
        billing_customer_id=_customer_id(data),
        source=SOURCE,
        number=_str(data.get("number")),
        due_date=_time(data.get("due_date")),
        paid_at=_time(paid_at),
        hosted_url=_str(data.get("hosted_invoice_url")),
        pdf_url=_str(data.get("invoice_pdf")),
    )


def subscription_from_stripe(data: Mapping[str, Any]) -> Subscription:
    """A Stripe subscription (as a dict) as the domain Subscription; raises UnreadableAnswer.

    The period end moved from the subscription to its items in API version 2025-03-31;
    both places are read, so any `STRIPE_API_VERSION` works.
    """
    subscription_id = _str(data.get("id"))
    status = _str(data.get("status"))
    if subscription_id is None or status is None:
        raise UnreadableAnswer("no id or status")
    items = data.get("items")
    item_list = items.get("data") if isinstance(items, Mapping) else None
    entries = [item for item in item_list or [] if isinstance(item, Mapping)]
    period_end = _time(data.get("current_period_end"))
    if period_end is None:
        ends = [end for item in entries if (end := _time(item.get("current_period_end")))]
        period_end = max(ends) if ends else None
    names: list[str] = []
    for item in entries:
        name = _plan_name(item.get("price")) or _plan_name(item.get("plan"))
        if name and name not in names:
            names.append(name)
    if not names:
        plan = _plan_name(data.get("plan"))
        names = [plan] if plan else []
    return Subscription(
        id=subscription_id,
        status=status,
        billing_customer_id=_customer_id(data),
        plan=", ".join(names) or None,
        current_period_end=period_end,
        cancel_at_period_end=data.get("cancel_at_period_end") is True,
    )


def _plan_name(price: Any) -> str | None:
    """A price's (or legacy plan's) human name: its nickname, else its lookup key."""
    if not isinstance(price, Mapping):
        return None
    product = price.get("product")
    product_name = _str(product.get("name")) if isinstance(product, Mapping) else None
    return _str(price.get("nickname")) or product_name or _str(price.get("lookup_key"))
