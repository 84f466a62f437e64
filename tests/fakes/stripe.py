"""A stateful fake of Stripe's API over real HTTP: seeded objects, fault injection, call log.

    fake = FakeStripe(api_key="sk_test_fake", latency=0.0)
    with serve(fake.app) as server:        # tests.servers.serve: uvicorn on a free port
        fake.url = server.url               # STRIPE_API_BASE for the gateway
        customer = fake.add_customer(email="ada@example.com")
        fake.add_invoice(customer, status="open", total=1200)
        fake.fail_next(500, times=3)        # the next three calls answer 500
        ...
        fake.calls                          # every request, parsed (StripeCall)

Or `with running_fake_stripe() as fake:` for both steps. Objects are built from Stripe's own
fixtures (`../shared/specs/stripe/fixtures3.2023-09-12.json`) with the seeded values laid
over them, so answers have Stripe's shape. The endpoints the gateway uses are implemented
with Stripe's semantics: newest first, `limit` 1..100, `starting_after`/`has_more`, the
invoice search (`customer:'...' OR ...`, at most 10 clauses and 5,000 characters, AND and OR
never mixed, `next_page` tokens, `total_count` when expanded; lag-free), unknown
parameters refused, `resource_missing` for unknown ids, API-key check, idempotent replay of
POSTs, and the API version (`Stripe-Version`) deciding where a subscription's period end is.
Every method is safe to call from the test thread while the server runs in its own.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import itertools
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.servers import serve

__all__ = ["FIXTURES", "FakeStripe", "Fault", "StripeCall", "running_fake_stripe"]

SPECS = Path(__file__).resolve().parents[3] / "shared" / "specs" / "stripe"
FIXTURES = SPECS / "fixtures3.2023-09-12.json"
# From this API version on, a subscription's period lives on its items (Stripe "basil").
_ITEM_PERIODS_SINCE = "2025-03-31"

_INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")
_SUBSCRIPTION_STATUSES = (
    "active",
    "all",
    "canceled",
    "ended",
    "incomplete",
    "incomplete_expired",
    "past_due",
    "paused",
    "trialing",
    "unpaid",
)
# Parameters each endpoint accepts (a subset of Stripe's; anything else is refused, as
# Stripe refuses unknown parameters).
_PARAMS = {
    ("GET", "/v1/invoices"): {"customer", "status", "limit", "starting_after", "expand"},
    ("GET", "/v1/invoices/{id}"): {"expand"},
    ("GET", "/v1/invoices/search"): {"query", "limit", "page", "expand"},
    ("GET", "/v1/subscriptions"): {"customer", "status", "limit", "starting_after", "expand"},
    ("GET", "/v1/customers"): {"email", "limit", "starting_after", "expand"},
    ("POST", "/v1/billing_portal/sessions"): {"customer", "return_url", "configuration", "locale"},
}


@dataclass
class StripeCall:
    """One request as the fake saw it, and what it answered."""

    method: str
    path: str
    params: list[tuple[str, str]]  # query string (GET) or form body (POST), in order
    headers: dict[str, str]  # lower-case names
    at: float  # time.monotonic() on arrival
    status: int | None = None  # set once answered
    response: Any = None  # the JSON answered (None for an injected malformed body)
    took: float | None = None  # seconds from arrival to the answer, latency included

    def param(self, name: str) -> str | None:
        return next((value for key, value in self.params if key == name), None)


@dataclass
class Fault:
    """One injected answer instead of the real one."""

    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    malformed: bool = False  # 200 with a body that is not JSON
    delay: float = 0.0
    path: str | None = None  # only calls whose path starts with this consume the fault


def _load_fixtures() -> dict[str, Any]:
    resources: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]
    return resources


def _unix(value: datetime | int | None, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, datetime):
        return int(value.timestamp())
    return value


class FakeStripe:
    def __init__(self, api_key: str = "sk_test_fake", *, latency: float = 0.0) -> None:
        """`latency` seconds are added to every answer (the benchmark sets 0.04)."""
        self.api_key = api_key
        self.latency = latency
        self.url = ""
        self.calls: list[StripeCall] = []
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests the fake was answering at once
        self.customers: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        # what the search answers from while frozen (freeze_search): a lagging index
        self.search_snapshot: dict[str, dict[str, Any]] | None = None
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self._order: dict[str, int] = {}  # object id -> insertion number (ties on `created`)
        self._faults: deque[Fault] = deque()
        self._down: Fault | None = None
        self._sessions: dict[str, tuple[list[tuple[str, str]], dict[str, Any]]] = {}
        self._fixtures = _load_fixtures()
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "DELETE"])]
        )

    # -- seeding ----------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{secrets.token_hex(7)}"

    def _remember(self, object_id: str) -> None:
        self._order[object_id] = next(self._seq)

    def add_customer(
        self, *, email: str | None = None, name: str | None = None, id: str | None = None
    ) -> str:
        """A customer; answers its id."""
        customer_id = id or self._id("cus")
        obj = copy.deepcopy(self._fixtures["customer"])
        obj.update(id=customer_id, email=email, name=name, created=int(time.time()))
        with self._lock:
            self.customers[customer_id] = obj
            self._remember(customer_id)
        return customer_id

    def add_invoice(
        self,
        customer: str,
        *,
        status: str = "open",
        total: int = 1000,
        currency: str = "usd",
        amount_paid: int | None = None,
        amount_remaining: int | None = None,
        created: datetime | int | None = None,
        due_date: datetime | int | None = None,
        paid_at: datetime | int | None = None,
        number: str | None = None,
        id: str | None = None,
    ) -> str:
        """An invoice of `customer`; amounts default the way Stripe sets them for `status`
        (a void invoice keeps its amount_remaining, as Stripe's does). Answers its id."""
        if status not in _INVOICE_STATUSES:
            raise ValueError(f"unknown invoice status {status!r}")
        invoice_id = id or self._id("in")
        created_at = _unix(created, int(time.time()))
        paid = amount_paid if amount_paid is not None else (total if status == "paid" else 0)
        remaining = amount_remaining if amount_remaining is not None else total - paid
        finalized = None if status == "draft" else created_at
        obj = copy.deepcopy(self._fixtures["invoice"])
        obj.update(
            id=invoice_id,
            customer=customer,
            status=status,
            total=total,
            subtotal=total,
            amount_due=total,
            amount_paid=paid,
            amount_remaining=remaining,
            paid=status == "paid",
            currency=currency,
            created=created_at,
            due_date=_unix(due_date, created_at + 14 * 86400),
            number=None if status == "draft" else (number or f"FAKE-{next(self._seq):04d}"),
            hosted_invoice_url=None
            if status == "draft"
            else f"https://invoice.stripe.com/i/{invoice_id}",
            invoice_pdf=None
            if status == "draft"
            else f"https://pay.stripe.com/invoice/{invoice_id}/pdf",
            status_transitions={
                "finalized_at": finalized,
                "marked_uncollectible_at": created_at if status == "uncollectible" else None,
                "paid_at": _unix(paid_at, created_at + 3 * 86400) if status == "paid" else None,
                "voided_at": created_at if status == "void" else None,
            },
            lines={
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/invoices/{invoice_id}/lines",
            },
        )
        with self._lock:
            self.invoices[invoice_id] = obj
            self._remember(invoice_id)
        return invoice_id

    def add_subscription(
        self,
        customer: str,
        *,
        status: str = "active",
        plan: str | None = "Pro (monthly)",
        current_period_end: datetime | int | None = None,
        cancel_at_period_end: bool = False,
        id: str | None = None,
    ) -> str:
        """A subscription of `customer` with one item whose price's nickname is `plan`."""
        subscription_id = id or self._id("sub")
        now = int(time.time())
        period_end = _unix(current_period_end, now + 30 * 86400)
        obj = copy.deepcopy(self._fixtures["subscription"])
        item = obj["items"]["data"][0]
        item["price"]["nickname"] = plan
        item["subscription"] = subscription_id
        item["current_period_end"] = period_end
        item["current_period_start"] = period_end - 30 * 86400
        obj.update(
            id=subscription_id,
            customer=customer,
            status=status,
            cancel_at_period_end=cancel_at_period_end,
            current_period_end=period_end,
            current_period_start=period_end - 30 * 86400,
            created=now,
        )
        obj["items"]["url"] = f"/v1/subscription_items?subscription={subscription_id}"
        with self._lock:
            self.subscriptions[subscription_id] = obj
            self._remember(subscription_id)
        return subscription_id

    # -- fault injection ----------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 500,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
        malformed: bool = False,
        delay: float = 0.0,
        path: str | None = None,
    ) -> None:
        """The next `times` calls (to `path...`, if given) get this answer instead."""
        with self._lock:
            for _ in range(times):
                self._faults.append(
                    Fault(status, dict(headers or {}), body, malformed, delay, path)
                )

    def fail_all(
        self,
        status: int = 500,
        *,
        headers: dict[str, str] | None = None,
        body: Any = None,
        malformed: bool = False,
    ) -> None:
        """Every call gets this answer until `recover()`."""
        with self._lock:
            self._down = Fault(status, dict(headers or {}), body, malformed)

    def recover(self) -> None:
        with self._lock:
            self._down = None
            self._faults.clear()

    def reset(self) -> None:
        """Back to empty: no objects, calls, faults or idempotency records; no latency.
        Lets one running server serve many tests."""
        with self._lock:
            for table in (self.customers, self.invoices, self.subscriptions, self._order):
                table.clear()
            self.calls.clear()
            self._faults.clear()
            self._sessions.clear()
            self._down = None
            self.latency = 0.0
            self.max_in_flight = self.in_flight
            self.search_snapshot = None

    def freeze_search(self) -> None:
        """From now on the search answers from the invoices as they are now, as Stripe's
        index does for up to a minute after a change (until `thaw_search` or `reset`)."""
        with self._lock:
            self.search_snapshot = copy.deepcopy(self.invoices)

    def thaw_search(self) -> None:
        with self._lock:
            self.search_snapshot = None

    def set_invoice_status(self, invoice_id: str, status: str) -> None:
        """Change an invoice as Stripe would on payment or voiding (amounts follow)."""
        with self._lock:
            invoice = self.invoices[invoice_id]
            invoice["status"] = status
            if status == "paid":
                invoice["amount_paid"] = invoice["total"]
                invoice["amount_remaining"] = 0
                invoice["paid"] = True

    # -- the call log ---------------------------------------------------------------------------

    def calls_to(self, method: str, path_prefix: str) -> list[StripeCall]:
        with self._lock:
            return [c for c in self.calls if c.method == method and c.path.startswith(path_prefix)]

    def reset_calls(self) -> None:
        """Forget the calls so far (and the in-flight high-water mark)."""
        with self._lock:
            self.calls.clear()
            self.max_in_flight = self.in_flight

    # -- the server -------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        params = parse_qsl(
            body.decode() if request.method == "POST" else request.url.query,
            keep_blank_values=True,
        )
        headers = {k.lower(): v for k, v in request.headers.items()}
        call = StripeCall(request.method, request.url.path, params, headers, time.monotonic())
        with self._lock:
            self.calls.append(call)
            fault = self._take_fault(call.path)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response = await self._respond(call, fault)
        finally:
            with self._lock:
                self.in_flight -= 1
        call.took = time.monotonic() - call.at
        return response

    async def _respond(self, call: StripeCall, fault: Fault | None) -> Response:
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault is not None:
            return await self._fault_answer(call, fault)
        headers = call.headers
        if headers.get("authorization") != f"Bearer {self.api_key}":
            shown = headers.get("authorization", "")[-4:]
            status, payload, extra = _error_body(
                401, "invalid_request_error", f"Invalid API Key provided: sk_****{shown}"
            )
        else:
            with self._lock:
                status, payload, extra = self._answer(call, headers.get("stripe-version", ""))
        call.status, call.response = status, payload
        response_headers = {"Request-Id": f"req_{secrets.token_hex(7)}", **extra}
        if headers.get("stripe-version"):
            response_headers["Stripe-Version"] = headers["stripe-version"]
        # orjson, as Stripe's servers burn none of this machine's CPU: the fake should burn
        # little (a staff page's search answers ~600 invoices, ~2.7 MB)
        return Response(
            orjson.dumps(payload),
            status_code=status,
            headers=response_headers,
            media_type="application/json",
        )

    def _take_fault(self, path: str) -> Fault | None:
        if self._down is not None:
            return self._down
        for index, fault in enumerate(self._faults):
            if fault.path is None or path.startswith(fault.path):
                del self._faults[index]
                return fault
        return None

    async def _fault_answer(self, call: StripeCall, fault: Fault) -> Response:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        call.status = 200 if fault.malformed else fault.status
        if fault.malformed:
            return Response(
                b'{"object": "list", "data": [{"id": ',
                status_code=200,
                media_type="application/json",
                headers=fault.headers,
            )
        body = fault.body
        if body is None:
            # a message a careless gateway would pass on: it must never reach a caller
            body = {
                "error": {
                    "type": "api_error",
                    "message": f"Internal failure near key {self.api_key}",
                }
            }
        call.response = body
        return JSONResponse(body, status_code=fault.status, headers=fault.headers)

    def _answer(self, call: StripeCall, version: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        path = call.path.rstrip("/")
        route = path
        object_id = ""
        if path.startswith("/v1/invoices/") and path.count("/") == 3 and path != _SEARCH:
            route, object_id = "/v1/invoices/{id}", path.rsplit("/", 1)[1]
        allowed = _PARAMS.get((call.method, route))
        if allowed is None:
            return _error_body(
                404, "invalid_request_error", f"Unrecognized request URL ({call.method}: {path})."
            )
        for key, _value in call.params:
            name = key.split("[", 1)[0]
            if name not in allowed:
                return _error_body(
                    400, "invalid_request_error", f"Received unknown parameter: {key}", param=key
                )
        values = dict(call.params)
        if route == "/v1/invoices/{id}":
            found = self.invoices.get(object_id)
            if found is None:
                return _missing("invoice", object_id, "id")
            return 200, copy.deepcopy(found), {}
        if route == "/v1/invoices":
            return self._list_invoices(values)
        if route == _SEARCH:
            expand = [v for k, v in call.params if k.split("[", 1)[0] == "expand"]
            return self._search_invoices(values, expand)
        if route == "/v1/subscriptions":
            return self._list_subscriptions(values, version)
        if route == "/v1/customers":
            email = values.get("email")
            customers = [
                c for c in self.customers.values() if email is None or c.get("email") == email
            ]
            return self._page(customers, values, "/v1/customers")
        return self._portal_session(call, values)

    def _list_invoices(self, values: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        customer = values.get("customer")
        status = values.get("status")
        if status is not None and status not in _INVOICE_STATUSES:
            return _error_body(400, "invalid_request_error", "Invalid status", param="status")
        if customer is not None and customer not in self.customers:
            return _missing("customer", customer, "customer")
        invoices = [
            inv
            for inv in self.invoices.values()
            if (customer is None or inv["customer"] == customer)
            and (status is None or inv["status"] == status)
        ]
        return self._page(invoices, values, "/v1/invoices")

    def _search_invoices(
        self, values: dict[str, str], expand: list[str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Stripe's invoice search, lag-free: `customer:'id'` and `status:'s'` clauses joined
        by one of AND or OR (never both), at most 10 clauses and 5,000 characters; pages of
        `limit` (1-100) newest first, `next_page` tokens; `total_count` when expanded."""
        query = values.get("query")
        if not query:
            return _error_body(400, "invalid_request_error", "Missing query", param="query")
        clauses = _parse_search(query)
        if isinstance(clauses, str):
            return _error_body(400, "invalid_request_error", clauses, param="query")
        joined_by_or = " OR " in query
        limit_text = values.get("limit", "10")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
            return _error_body(
                400, "invalid_request_error", "Invalid integer: limit", param="limit"
            )
        limit = int(limit_text)

        def matches(invoice: dict[str, Any]) -> bool:
            verdicts = [invoice.get(field) == value for field, value in clauses]
            return any(verdicts) if joined_by_or else all(verdicts)

        indexed = self.search_snapshot if self.search_snapshot is not None else self.invoices
        found = sorted(
            (inv for inv in indexed.values() if matches(inv)),
            key=self._sort_key,
            reverse=True,
        )
        start = 0
        token = values.get("page")
        if token is not None:
            start_or_none = _read_page_token(token, query)
            if start_or_none is None:
                return _error_body(400, "invalid_request_error", "Invalid page", param="page")
            start = start_or_none
        chosen = found[start : start + limit]
        more = start + limit < len(found)
        body: dict[str, Any] = {
            "object": "search_result",
            "url": _SEARCH,
            "has_more": more,
            "next_page": _page_token(start + limit, query) if more else None,
            "data": [_copied(obj) for obj in chosen],
        }
        if "total_count" in expand:
            body["total_count"] = len(found)
        return 200, body, {}

    def _list_subscriptions(
        self, values: dict[str, str], version: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        customer = values.get("customer")
        status = values.get("status")
        if status is not None and status not in _SUBSCRIPTION_STATUSES:
            return _error_body(400, "invalid_request_error", "Invalid status", param="status")
        if customer is not None and customer not in self.customers:
            return _missing("customer", customer, "customer")
        found = []
        for sub in self.subscriptions.values():
            if customer is not None and sub["customer"] != customer:
                continue
            if status == "all":
                wanted = True
            elif status is None:  # Stripe's default: every subscription not canceled
                wanted = sub["status"] != "canceled"
            elif status == "ended":
                wanted = sub["status"] in ("canceled", "incomplete_expired")
            else:
                wanted = sub["status"] == status
            if not wanted:
                continue
            shaped = copy.deepcopy(sub)
            if version >= _ITEM_PERIODS_SINCE:
                shaped.pop("current_period_end", None)
                shaped.pop("current_period_start", None)
            else:
                for item in shaped["items"]["data"]:
                    item.pop("current_period_end", None)
                    item.pop("current_period_start", None)
            found.append(shaped)
        return self._page(found, values, "/v1/subscriptions")

    def _page(
        self, objects: list[dict[str, Any]], values: dict[str, str], url: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        try:
            limit = int(values.get("limit", "10"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return _error_body(
                400, "invalid_request_error", "Invalid integer: limit", param="limit"
            )
        ordered = sorted(objects, key=self._sort_key, reverse=True)
        after = values.get("starting_after")
        if after is not None:
            anchor = (
                self.invoices.get(after)
                or self.subscriptions.get(after)
                or self.customers.get(after)
            )
            if anchor is None:
                return _missing("object", after, "starting_after")
            bound = self._sort_key(anchor)
            ordered = [obj for obj in ordered if self._sort_key(obj) < bound]
        chosen = ordered[:limit]
        return (
            200,
            {
                "object": "list",
                "url": url,
                "has_more": len(ordered) > limit,
                "data": [_copied(obj) for obj in chosen],
            },
            {},
        )

    def _sort_key(self, obj: dict[str, Any]) -> tuple[int, int]:
        return int(obj.get("created") or 0), self._order.get(obj["id"], 0)

    def _portal_session(
        self, call: StripeCall, values: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        key = call.headers.get("idempotency-key")
        if key is not None and key in self._sessions:
            first_params, answer = self._sessions[key]
            if first_params != call.params:
                return _error_body(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters.",
                )
            return 200, copy.deepcopy(answer), {"Idempotent-Replayed": "true"}
        customer = values.get("customer")
        return_url = values.get("return_url", "")
        if customer is None or customer not in self.customers:
            return _missing("customer", customer or "", "customer")
        if not return_url.startswith(("http://", "https://")):
            return _error_body(400, "invalid_request_error", "Not a valid URL", param="return_url")
        session = copy.deepcopy(self._fixtures["billing_portal.session"])
        session.update(
            id=self._id("bps"),
            customer=customer,
            return_url=return_url,
            created=int(time.time()),
            livemode=False,
            url=f"https://billing.stripe.com/p/session/test_{secrets.token_urlsafe(12)}",
        )
        if key is not None:
            self._sessions[key] = (list(call.params), session)
        return 200, copy.deepcopy(session), {}


_SEARCH = "/v1/invoices/search"
# Stripe's search query language: `field:'value'` clauses (a fake subset: the invoice fields
# the gateway searches), at most 10 of them joined by AND or by OR, not both.
SEARCH_CLAUSES_MAX = 10
SEARCH_QUERY_MAX = 5000
_CLAUSE = re.compile(r"^(customer|status):'([^'\\]*)'$")


def _parse_search(query: str) -> list[tuple[str, str]] | str:
    """The (field, value) clauses of a search query, or Stripe's complaint about it."""
    if len(query) > SEARCH_QUERY_MAX:
        return f"Query is longer than {SEARCH_QUERY_MAX} characters"
    if " AND " in query and " OR " in query:
        return "Query cannot combine AND and OR"
    parts = re.split(r" (?:AND|OR) ", query)
    if len(parts) > SEARCH_CLAUSES_MAX:
        return f"Query has more than {SEARCH_CLAUSES_MAX} clauses"
    clauses = []
    for part in parts:
        match = _CLAUSE.match(part.strip())
        if match is None:
            return f"Query could not be parsed near {part[:40]!r}"
        clauses.append((match.group(1), match.group(2)))
    return clauses


def _page_token(offset: int, query: str) -> str:
    raw = json.dumps({"o": offset, "q": query}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _read_page_token(token: str, query: str) -> int | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(value, dict) or value.get("q") != query:
        return None  # a page token belongs to its query
    offset = value.get("o")
    return offset if isinstance(offset, int) and offset >= 0 else None


def _copied(obj: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a JSON object, several times faster than copy.deepcopy."""
    copied: dict[str, Any] = orjson.loads(orjson.dumps(obj))
    return copied


def _error_body(
    status: int, type: str, message: str, *, param: str | None = None, code: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    error: dict[str, Any] = {"type": type, "message": message}
    if param is not None:
        error["param"] = param
    if code is not None:
        error["code"] = code
    return status, {"error": error}, {}


def _missing(kind: str, object_id: str, param: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    status = 404 if param == "id" else 400
    return _error_body(
        status,
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        param=param,
        code="resource_missing",
    )


@contextmanager
def running_fake_stripe(
    api_key: str = "sk_test_fake", *, latency: float = 0.0
) -> Iterator[FakeStripe]:
    """A FakeStripe served on a free port; `.url` is its base URL."""
    fake = FakeStripe(api_key, latency=latency)
    with serve(fake.app, timeout_graceful_shutdown=2) as server:
        fake.url = server.url
        yield fake
