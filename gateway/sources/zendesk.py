"""Zendesk Support adapter (HELPDESK_SOURCE=zendesk), basic auth `{email}/token:{api token}`.

- ticket_pages: `GET /api/v2/users/{id}/tickets/requested` with cursor pagination
  (`page[size]`, `page[after]`; `meta.has_more`, `meta.after_cursor`), one call per
  requester under bounded concurrency. Zendesk's search API lags by minutes, so it is
  never used for a customer's own list.
- ticket_pages_indexed (views of many customers): `GET /api/v2/search/export` with
  `filter[type]=ticket` and `requester:a requester:b ...` (repeated values of one keyword
  match any of them), up to 1,000 tickets a page: every ticket of up to 100 requesters in
  one call, with the search index's lag.
- ticket_counts: `GET /api/v2/users/{id}/related` (`requested_tickets`), or for one status
  `GET /api/v2/search/count` (`type:ticket requester:{id} status:{status}`, lagging).
- tickets: `GET /api/v2/tickets/show_many?ids=` with at most 100 ids a call.
- requester_ids_by_email: `GET /api/v2/users/search?query=email:...`, the missing-link hook.
- create_ticket: `POST /api/v2/tickets` with Zendesk's `Idempotency-Key` header, so a
  repeat after a lost answer returns the first ticket instead of making a second.

Zendesk's JSON is parsed into domain models here and goes no further; its error texts are
never shown to callers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
import msgspec

from gateway.domain import Page, Ticket, TicketDraft, TicketQuery, TicketStatus
from gateway.errors import BadUserInput, IntegrationUnavailable, NotFound
from gateway.redis_client import RedisClient
from gateway.settings import RateLimit, Settings
from gateway.sources.answers import ProviderAnswers, decode_or_none
from gateway.sources.fanout import batched, each, fanout_limit, filled, spread
from gateway.upstream import BreakerState, RateLimiter, SlotUnavailable, UpstreamClient

__all__ = [
    "EXPORT_PAGE_MAX",
    "EXPORT_RATE",
    "PAGE_MAX",
    "SEARCH_FROM",
    "SHOW_MANY_MAX",
    "ZendeskHelpdesk",
    "idempotency_header",
]

log = logging.getLogger("gateway.sources.zendesk")


# Zendesk's limits: cursor pages of at most 100, show_many of at most 100 ids.
PAGE_MAX = 100
SHOW_MANY_MAX = 100
# The search export: pages of at most 1,000 (`page[size]`), cursor paginated, 100 calls a
# minute per account besides the account's own limit. A view of at least SEARCH_FROM
# requesters reads it; fewer, the lists. Requesters per query: at most _EXPORT_REQUESTERS
# (a query of ~2,500 characters); pages of one query followed: _EXPORT_PAGES_MAX.
EXPORT_PAGE_MAX = 1000
SEARCH_FROM = 5
_EXPORT_REQUESTERS = 100
_EXPORT_PAGES_MAX = 3
EXPORT_RATE = RateLimit(100, 60.0)
# The requested-tickets endpoint cannot filter by status: a filtered page is collected from
# at most this many pages of 100, then it ends with a cursor that carries on from there.
_SCAN_PAGES = 5

_STATUSES = {
    "new": TicketStatus.NEW,
    "open": TicketStatus.OPEN,
    "pending": TicketStatus.PENDING,
    "hold": TicketStatus.ON_HOLD,
    "solved": TicketStatus.SOLVED,
    "closed": TicketStatus.CLOSED,
}
_NO_ACCOUNT = "no help-desk account for this customer"
# Fields of a rejected ticket (Zendesk's RecordInvalid details) that are the caller's input.
_DRAFT_FIELDS = {
    "subject": "subject",
    "description": "description",
    "comment": "description",
    "priority": "priority",
}


class _ZendeskTicket(msgspec.Struct):
    id: int
    requester_id: int
    status: str
    created_at: datetime
    subject: str | None = None
    description: str | None = None
    priority: str | None = None
    updated_at: datetime | None = None


class _Meta(msgspec.Struct):
    has_more: bool = False
    after_cursor: str | None = None


class _TicketList(msgspec.Struct):
    tickets: list[_ZendeskTicket]
    meta: _Meta | None = None


class _ExportAnswer(msgspec.Struct):
    results: list[_ZendeskTicket]
    meta: _Meta | None = None


class _Count(msgspec.Struct):
    count: int


class _Related(msgspec.Struct):
    requested_tickets: int | None = None


class _UserRelated(msgspec.Struct):
    user_related: _Related


class _OneTicket(msgspec.Struct):
    ticket: _ZendeskTicket


class _ZendeskUser(msgspec.Struct):
    id: int
    email: str | None = None


class _UserList(msgspec.Struct):
    users: list[_ZendeskUser]


class _ErrorAnswer(msgspec.Struct):
    error: Any = None  # "RecordInvalid", or {"title": ..., "message": ...}
    details: dict[str, Any] = {}


def _numeric(value: str) -> bool:
    """Zendesk ids are numbers; anything else cannot name a Zendesk record."""
    return value.isascii() and value.isdigit()


def idempotency_header(key: str) -> str:
    """The `Idempotency-Key` sent for a gateway key: fixed length, ASCII, opaque to Zendesk."""
    return hashlib.sha256(key.encode()).hexdigest()


def _cursor(zendesk_cursor: str | None, skip: int) -> str:
    """Our cursor: Zendesk's cursor of a page plus how many of its tickets were consumed."""
    raw = json.dumps([zendesk_cursor, skip], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_cursor(after: str | None) -> tuple[str | None, int]:
    if not after:
        return None, 0
    try:
        raw = base64.urlsafe_b64decode(after + "=" * (-len(after) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        value = None
    if (
        isinstance(value, list)
        and len(value) == 2
        and (value[0] is None or isinstance(value[0], str))
        and isinstance(value[1], int)
        and 0 <= value[1] <= PAGE_MAX
    ):
        return value[0], value[1]
    raise BadUserInput("after must be a cursor from a previous page", field="after")


def _searched_page(query: TicketQuery, tickets: list[Ticket]) -> Page[Ticket] | None:
    """A requester's first page out of all its tickets (newest first), with the cursors the
    list path reads (its position in the unfiltered list); None when a cursor would be
    past what one list page can skip (the list answers then)."""
    items: list[Ticket] = []
    cursors: list[str] = []
    matching = 0
    last = 0
    for index, ticket in enumerate(tickets):
        if query.status is not None and ticket.status is not query.status:
            continue
        matching += 1
        if len(items) < query.first:
            items.append(ticket)
            cursors.append(_cursor(None, index + 1))
            last = index + 1
    if last > PAGE_MAX:
        return None
    more = matching > len(items)
    return Page(
        items=items,
        next_cursor=cursors[-1] if more and cursors else None,
        total_count=matching,
        cursors=cursors,
    )


class ZendeskHelpdesk:
    """The help-desk protocol of gateway.sources.base over the Zendesk Support API."""

    name = "zendesk"
    pages_carry_totals = False  # cursor pages have no count (a whole first page counts itself)
    _answers = ProviderAnswers(name, log)

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        token = settings.zendesk_api_token
        missing = [
            name
            for name, value in (
                ("ZENDESK_BASE_URL", settings.zendesk_base_url),
                ("ZENDESK_EMAIL", settings.zendesk_email),
                ("ZENDESK_API_TOKEN", token.get_secret_value() if token else None),
            )
            if not value
        ]
        if missing or settings.zendesk_base_url is None or token is None:
            raise ValueError(f"HELPDESK_SOURCE=zendesk needs {', '.join(missing)}")
        self._client = UpstreamClient(
            self.name,
            base_url=settings.zendesk_base_url,
            settings=settings,
            redis=redis,
            auth=httpx.BasicAuth(f"{settings.zendesk_email}/token", token.get_secret_value()),
            transport=transport,
        )

        # one batch's calls in flight: what RATE_LIMIT_ZENDESK allows in a second
        self._fanout = fanout_limit(settings, self.name)
        self._export_budget = RateLimiter(
            self.name,
            EXPORT_RATE,
            key=f"{settings.cache_prefix}ratelimit:{self.name}:export",
            redis=redis,
        )
        # Tickets per requester in this process's last export: how many requesters one
        # query can carry and still fit one page of 1,000.
        self._per_requester = 10.0

    @property
    def breaker_state(self) -> BreakerState:
        return self._client.breaker_state

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- a requester's tickets -----------------------------------------------------------

    async def ticket_pages(self, queries: Sequence[TicketQuery]) -> list[Page[Ticket] | Exception]:
        """One page of each requester's tickets: one call per requester (usually)."""
        return await each(queries, self._ticket_page, self._fanout)

    async def ticket_pages_indexed(
        self, queries: Sequence[TicketQuery]
    ) -> list[Page[Ticket] | Exception]:
        """First pages of many requesters from the search export (lags Zendesk by minutes);
        later pages, and views of fewer than SEARCH_FROM requesters, from the lists."""
        wanted = [
            q.requester_id
            for q in queries
            if q.after is None and q.first > 0 and _numeric(q.requester_id)
        ]
        requesters = list(dict.fromkeys(wanted))
        if len(requesters) < SEARCH_FROM:
            return await self.ticket_pages(queries)
        found = await self._exported(requesters)
        out: list[Page[Ticket] | Exception | None] = []
        listed: list[int] = []
        for query in queries:
            tickets = found.get(query.requester_id) if query.after is None else None
            page = _searched_page(query, tickets) if isinstance(tickets, list) else tickets
            if page is None:
                listed.append(len(out))
            out.append(page)
        if listed:
            pages = await self.ticket_pages([queries[i] for i in listed])
            for position, answer in zip(listed, pages, strict=True):
                out[position] = answer
        return filled(out)

    async def ticket_counts(self, queries: Sequence[TicketQuery]) -> list[int | Exception | None]:
        """How many tickets each requester has (of the query's status), one call each."""
        return await each(queries, self._ticket_count, self._fanout)

    async def _ticket_count(self, query: TicketQuery) -> int | None:
        if not _numeric(query.requester_id):
            raise NotFound(_NO_ACCOUNT)
        if query.status is None:
            operation = "users.related"
            response = await self._client.request(
                "GET", f"/api/v2/users/{query.requester_id}/related", operation=operation
            )
            if response.status_code == 404:
                raise NotFound(_NO_ACCOUNT)
            if response.status_code != 200:
                raise self._failure(response, operation)
            related = self._answers.decode(response, _UserRelated, operation)
            return related.user_related.requested_tickets
        operation = "search.count"
        status = next(k for k, v in _STATUSES.items() if v is query.status)
        response = await self._client.request(
            "GET",
            "/api/v2/search/count",
            operation=operation,
            params={"query": f"type:ticket requester:{query.requester_id} status:{status}"},
        )
        if response.status_code != 200:
            raise self._failure(response, operation)
        return self._answers.decode(response, _Count, operation).count

    async def _exported(self, requesters: list[str]) -> dict[str, list[Ticket] | Exception]:
        """Every ticket of each requester, newest first, in as few export calls as one
        page of 1,000 per query allows; a requester left out is to be listed."""
        fits = int(EXPORT_PAGE_MAX // max(self._per_requester, 1.0))
        groups = spread(requesters, max(1, min(_EXPORT_REQUESTERS, fits)))
        answers = await each(groups, self._export_group, self._fanout)
        found: dict[str, list[Ticket] | Exception] = {}
        seen = searched = 0
        for group, answer in zip(groups, answers, strict=True):
            if isinstance(answer, Exception):
                found.update(dict.fromkeys(group, answer))
            elif answer is not None:
                found.update(answer)
                searched += len(group)
                seen += sum(len(t) for t in answer.values() if isinstance(t, list))
        if searched:
            self._per_requester = max(1.0, seen / searched)
        return found

    async def _export_group(
        self, requesters: list[str]
    ) -> dict[str, list[Ticket] | Exception] | None:
        """One export query over `requesters`, paged through; None past _EXPORT_PAGES_MAX."""
        operation = "search.export"
        query = " ".join(f"requester:{requester}" for requester in requesters)
        found: dict[str, list[Ticket] | Exception] = {r: [] for r in requesters}
        cursor: str | None = None
        for _ in range(_EXPORT_PAGES_MAX):
            if not await self._export_slot():
                return None  # the export's own budget is spent: the lists answer
            params: dict[str, str | int] = {
                "query": query,
                "filter[type]": "ticket",
                "page[size]": EXPORT_PAGE_MAX,
            }
            if cursor is not None:
                params["page[after]"] = cursor
            response = await self._client.request(
                "GET", "/api/v2/search/export", operation=operation, params=params
            )
            if response.status_code != 200:
                raise self._failure(response, operation)
            answer = self._answers.decode(response, _ExportAnswer, operation)
            for raw in answer.results:
                tickets = found.get(str(raw.requester_id))
                if not isinstance(tickets, list):
                    continue  # not asked for (or already failed): never on another's page
                try:
                    tickets.append(self._ticket(raw))
                except IntegrationUnavailable as exc:
                    found[str(raw.requester_id)] = exc
            meta = answer.meta or _Meta()
            if not (meta.has_more and meta.after_cursor):
                for tickets in found.values():
                    if isinstance(tickets, list):
                        # the lists' order (created_at desc); the export's own is not promised
                        tickets.sort(key=lambda t: (t.created_at, int(t.id)), reverse=True)
                return found
            cursor = meta.after_cursor
        return None

    async def _export_slot(self) -> bool:
        """A call of the export's own budget (100 a minute per account, shared by every
        replica), taken only when free now: a spent budget sends the view to the lists,
        which cost more calls of the account's budget but no waiting."""
        try:
            await self._export_budget.reserve(max_wait=0)
        except SlotUnavailable:
            log.info("zendesk search export budget spent; reading the requesters' lists")
            return False
        return True

    async def _ticket_page(self, query: TicketQuery) -> Page[Ticket]:
        if not _numeric(query.requester_id):
            raise NotFound(_NO_ACCOUNT)
        cursor, skip = _read_cursor(query.after)
        if query.first <= 0:
            return Page(items=[])
        # a first page that holds the whole list counts it: no count call for totalCount
        whole = cursor is None and skip == 0
        items: list[Ticket] = []
        cursors: list[str] = []
        for _ in range(_SCAN_PAGES):
            wanted = PAGE_MAX if query.status is not None else skip + query.first - len(items)
            answer = await self._requested(query.requester_id, cursor, min(wanted, PAGE_MAX))
            meta = answer.meta or _Meta()
            following = meta.after_cursor if meta.has_more and meta.after_cursor else None
            raw = answer.tickets
            for index in range(skip, len(raw)):
                ticket = self._ticket(raw[index])
                if query.status is not None and ticket.status is not query.status:
                    continue
                last_here = index + 1 == len(raw)
                # where a page that starts after this ticket begins
                position = (
                    _cursor(following, 0) if last_here and following else _cursor(cursor, index + 1)
                )
                items.append(ticket)
                cursors.append(position)
                if len(items) == query.first:
                    more = not last_here or following is not None
                    return Page(
                        items=items,
                        next_cursor=position if more else None,
                        total_count=len(items) if whole and not more else None,
                        cursors=cursors,
                    )
            if following is None:
                return Page(items=items, total_count=len(items) if whole else None, cursors=cursors)
            cursor, skip = following, 0
        # scanned enough for one answer: the rest starts where the scan stopped
        return Page(items=items, next_cursor=_cursor(cursor, 0), cursors=cursors)

    async def _requested(self, requester_id: str, cursor: str | None, size: int) -> _TicketList:
        operation = "tickets.requested"
        params: dict[str, str | int] = {
            "page[size]": size,
            "sort_by": "created_at",
            "sort_order": "desc",
        }
        if cursor:
            params["page[after]"] = cursor
        response = await self._client.request(
            "GET",
            f"/api/v2/users/{requester_id}/tickets/requested",
            operation=operation,
            params=params,
        )
        status = response.status_code
        if status == 404:
            raise NotFound(_NO_ACCOUNT)
        if status == 400 and cursor:
            # Zendesk's cursors expire after an hour
            self._log_error(response, operation)
            raise BadUserInput("after is no longer a valid cursor: start again", field="after")
        if status != 200:
            raise self._failure(response, operation)
        return self._answers.decode(response, _TicketList, operation)

    # -- tickets by id -------------------------------------------------------------------

    async def tickets(self, ids: Sequence[str]) -> list[Ticket | Exception | None]:
        """Tickets by Zendesk id, whoever requested them: one show_many per 100 ids."""
        wanted = [id for id in dict.fromkeys(ids) if _numeric(id)]
        found = await batched(wanted, SHOW_MANY_MAX, self._show_many, self._fanout)
        return [found.get(id) for id in ids]

    async def _show_many(self, batch: list[str]) -> dict[str, Ticket | Exception | None]:
        operation = "tickets.show_many"
        response = await self._client.request(
            "GET",
            "/api/v2/tickets/show_many",
            operation=operation,
            params={"ids": ",".join(batch)},
        )
        if response.status_code == 404:
            return dict.fromkeys(batch)
        if response.status_code != 200:
            raise self._failure(response, operation)
        answer = self._answers.decode(response, _TicketList, operation)
        out: dict[str, Ticket | Exception | None] = dict.fromkeys(batch)
        for raw in answer.tickets:
            id = str(raw.id)
            if id in out:
                try:
                    out[id] = self._ticket(raw)
                except IntegrationUnavailable as exc:
                    out[id] = exc
        return out

    # -- the missing-link hook -----------------------------------------------------------

    async def requester_ids_by_email(self, emails: Sequence[str]) -> list[str | Exception | None]:
        """The Zendesk user id of each email: one users search per distinct address."""
        wanted = list(dict.fromkeys(e.strip().lower() for e in emails))
        answers = await each(wanted, self._user_by_email, self._fanout)
        found = dict(zip(wanted, answers, strict=True))
        return [found[e.strip().lower()] for e in emails]

    async def _user_by_email(self, email: str) -> str | None:
        # Zendesk's search syntax reads spaces, quotes and brackets as operators: an
        # address containing them is no address Zendesk can hold.
        if "@" not in email or any(c.isspace() or c in "\"'()" for c in email):
            return None
        operation = "users.search"
        response = await self._client.request(
            "GET", "/api/v2/users/search", operation=operation, params={"query": f"email:{email}"}
        )
        if response.status_code != 200:
            raise self._failure(response, operation)
        answer = self._answers.decode(response, _UserList, operation)
        for user in answer.users:
            # search may match loosely; only the exact address is this customer
            if user.email and user.email.strip().lower() == email:
                return str(user.id)
        return None

    # -- writes --------------------------------------------------------------------------

    async def create_ticket(
        self, requester_id: str, draft: TicketDraft, idempotency_key: str | None
    ) -> Ticket:
        """A new ticket from `requester_id`; a repeat with the same key answers the first."""
        if not _numeric(requester_id):
            raise NotFound(_NO_ACCOUNT)
        ticket: dict[str, Any] = {
            "requester_id": int(requester_id),
            "subject": draft.subject,
            "comment": {"body": draft.description, "public": True},
        }
        if draft.priority:
            ticket["priority"] = draft.priority
        operation = "tickets.create"
        response = await self._client.request(
            "POST",
            "/api/v2/tickets",
            operation=operation,
            json={"ticket": ticket},
            idempotency_key=idempotency_header(idempotency_key) if idempotency_key else None,
        )
        status = response.status_code
        if status in (200, 201):
            return self._ticket(self._answers.decode(response, _OneTicket, operation).ticket)
        if status == 404:
            raise NotFound(_NO_ACCOUNT)
        if status in (400, 422):
            raise self._rejected(response, operation)
        raise self._failure(response, operation)

    def _rejected(self, response: httpx.Response, operation: str) -> Exception:
        """A refused ticket: the caller's fault where Zendesk names one of its fields."""
        answer = decode_or_none(response, _ErrorAnswer)
        self._log_error(response, operation, answer)
        if answer is not None:
            if answer.error == "IdempotentRequestError":
                # the same key came with a different ticket: the client reused its id
                return BadUserInput(
                    "clientMutationId was already used for a different ticket",
                    field="clientMutationId",
                )
            if answer.error == "RecordInvalid":
                named = set(answer.details)
                if "requester" in named or "requester_id" in named:
                    return NotFound(_NO_ACCOUNT)
                fields = {_DRAFT_FIELDS[k] for k in named if k in _DRAFT_FIELDS}
                if len(fields) == 1:
                    [field] = fields
                    return BadUserInput(f"the help desk did not accept this {field}", field=field)
        return IntegrationUnavailable(
            self.name,
            f"zendesk refused the request (HTTP {response.status_code})",
            retryable=False,
        )

    # -- answers -------------------------------------------------------------------------

    def _ticket(self, raw: _ZendeskTicket) -> Ticket:
        status = _STATUSES.get(raw.status)
        if status is None:
            log.warning(
                "zendesk ticket with an unknown status",
                extra={"provider": self.name, "ticket_id": raw.id},
            )
            raise IntegrationUnavailable(
                self.name, "zendesk answered something the gateway could not read"
            )
        return Ticket(
            id=str(raw.id),
            subject=raw.subject or "",
            status=status,
            created_at=raw.created_at,
            requester_id=str(raw.requester_id),
            description=raw.description,
            priority=raw.priority.lower() if raw.priority else None,
            updated_at=raw.updated_at,
        )

    def _failure(self, response: httpx.Response, operation: str) -> IntegrationUnavailable:
        """Any other answer: our request or our credentials are wrong."""
        self._log_error(response, operation, decode_or_none(response, _ErrorAnswer))
        return self._answers.refused(response.status_code)

    def _log_error(
        self, response: httpx.Response, operation: str, answer: _ErrorAnswer | None = None
    ) -> None:
        # Zendesk's error name is safe to log; its descriptions can quote what we sent.
        error = answer.error if answer is not None and isinstance(answer.error, str) else None
        self._answers.log_refusal(
            response,
            operation,
            {"error": error, "zendesk_request_id": response.headers.get("x-zendesk-request-id")},
        )
