"""A stateful Zendesk Support API over real HTTP; its answers follow shared/specs/zendesk/oas.yaml.

Routes (names for `fail`, `count`, `calls_to`):
- `tickets_requested`  GET  /api/v2/users/{id}/tickets/requested   cursor pagination:
                       `page[size]` (1-100), `page[after]`; `meta.has_more`,
                       `meta.after_cursor`; `sort_by` created_at/updated_at/id, `sort_order`
- `tickets_show_many`  GET  /api/v2/tickets/show_many?ids=          at most 100 ids
- `ticket_show`        GET  /api/v2/tickets/{id}
- `tickets_create`     POST /api/v2/tickets                         honours `Idempotency-Key`
                       (same key and body: the first answer again, `x-idempotency-lookup:
                       hit`; same key, other body: 400 IdempotentRequestError)
- `search_export`      GET  /api/v2/search/export?query=&filter[type]=ticket   cursor pages of
                       `page[size]` 1-1000; `type:` in the query refused (the filter says it)
- `search`             GET  /api/v2/search?query=type:ticket ...    offset pages (`page`,
                       `per_page` 1-100), `sort_by`/`sort_order`; past 1,000 results: 422
- `search_count`       GET  /api/v2/search/count?query=
- `user_related`       GET  /api/v2/users/{id}/related              `requested_tickets`, ...
- `users_search`       GET  /api/v2/users/search?query=email:...    (or `external_id=`)
- `users_show_many`    GET  /api/v2/users/show_many?ids=
- `user_show`          GET  /api/v2/users/{id}

Every request must carry basic auth `{email}/token:{token}`. The search endpoints read a
subset of Zendesk's query syntax, lag-free: `type:ticket`, `requester:{id}` and
`status:{status}`; repeated values of one keyword match any of them (`requester:1
requester:2`), different keywords all; anything else is refused with 400, so an adapter
cannot send syntax the fake would silently misread.

    zendesk = FakeZendesk()
    user = zendesk.add_user("ada@example.com", "Ada Lovelace")
    zendesk.add_ticket(user, "Invoice missing", status="open")
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request

from tests.fakes.provider import Answer, Handler, StatefulFake

__all__ = ["STATUSES", "FakeZendesk"]

PAGE_MAX = 100
SHOW_MANY_MAX = 100
EXPORT_PAGE_MAX = 1000
SEARCH_RESULTS_MAX = 1000
STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
_EPOCH = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
_SORTABLE = ("id", "created_at", "updated_at")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeZendesk(StatefulFake):
    provider = "zendesk"

    def __init__(
        self,
        *,
        email: str = "agent@example.com",
        token: str = "zendesk-test-token",
        latency: float = 0.0,
    ) -> None:
        self.email = email
        self.token = token
        self.users: dict[int, dict[str, Any]] = {}
        self.tickets: dict[int, dict[str, Any]] = {}
        # what the search endpoints answer from while frozen (freeze_search): a lagging index
        self.search_snapshot: dict[int, dict[str, Any]] | None = None
        # Idempotency-Key -> (hash of the request body, the answer given)
        self.idempotency: dict[str, tuple[str, Answer]] = {}
        self._user_ids = itertools.count(360_000_001)
        self._ticket_ids = itertools.count(1)
        self._clock = itertools.count()
        super().__init__(latency=latency)

    def clear_data(self) -> None:
        with self.lock:
            self.users.clear()
            self.tickets.clear()
            self.idempotency.clear()
            self.search_snapshot = None

    def freeze_search(self) -> None:
        """From now on the search endpoints answer from the tickets as they are now, as
        Zendesk's index does for minutes after a change (until `reset`)."""
        with self.lock:
            self.search_snapshot = {id: dict(t) for id, t in self.tickets.items()}

    @property
    def authorization(self) -> str:
        raw = f"{self.email}/token:{self.token}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    # -- seeding -------------------------------------------------------------------------

    def add_user(self, email: str, name: str | None = None, *, role: str = "end-user") -> str:
        """Store a user; answers its id as a string (the help-desk link the CRM carries)."""
        with self.lock:
            id = next(self._user_ids)
            stamp = _stamp(_EPOCH)
            self.users[id] = {
                "id": id,
                "url": f"{self.url}/api/v2/users/{id}.json",
                "name": name or email.split("@")[0],
                "email": email,
                "created_at": stamp,
                "updated_at": stamp,
                "time_zone": "UTC",
                "iana_time_zone": "Etc/UTC",
                "locale": "en-US",
                "locale_id": 1,
                "role": role,
                "verified": True,
                "active": True,
                "suspended": False,
                "shared": False,
            }
            return str(id)

    def add_ticket(
        self,
        requester_id: str,
        subject: str,
        *,
        status: str = "open",
        priority: str | None = "normal",
        description: str = "Where can I download last month's invoice?",
        created_at: datetime | None = None,
    ) -> str:
        """Store a ticket; answers its id as a string. Later tickets are newer by default."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        with self.lock:
            created = created_at or _EPOCH + timedelta(hours=next(self._clock))
            ticket = self._new_ticket(int(requester_id), subject, description, priority, created)
            ticket["status"] = status
            return str(ticket["id"])

    def _new_ticket(
        self,
        requester_id: int,
        subject: str,
        description: str,
        priority: str | None,
        created: datetime,
    ) -> dict[str, Any]:
        id = next(self._ticket_ids)
        stamp = _stamp(created)
        ticket: dict[str, Any] = {
            "url": f"{self.url}/api/v2/tickets/{id}.json",
            "id": id,
            "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
            "created_at": stamp,
            "updated_at": stamp,
            "generated_timestamp": int(created.timestamp()),
            "type": "question",
            "subject": subject,
            "raw_subject": subject,
            "description": description,
            "status": "new",
            "requester_id": requester_id,
            "submitter_id": requester_id,
            "collaborator_ids": [],
            "follower_ids": [],
            "email_cc_ids": [],
            "has_incidents": False,
            "is_public": True,
            "tags": [],
            "custom_fields": [],
            "sharing_agreement_ids": [],
            "followup_ids": [],
            "from_messaging_channel": False,
            "allow_channelback": False,
            "allow_attachments": True,
        }
        # the spec's priority is a non-nullable enum: an unset priority is left out
        if priority is not None:
            ticket["priority"] = priority
        self.tickets[id] = ticket
        return ticket

    def tickets_of(self, requester_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [t for t in self.tickets.values() if str(t["requester_id"]) == requester_id]

    # -- StatefulFake --------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, str, Handler]]:
        return [
            ("tickets_requested", "GET", "/api/v2/users/{id}/tickets/requested", self._requested),
            ("tickets_show_many", "GET", "/api/v2/tickets/show_many", self._show_many),
            ("ticket_show", "GET", "/api/v2/tickets/{id}", self._ticket_show),
            ("tickets_create", "POST", "/api/v2/tickets", self._create),
            ("search_export", "GET", "/api/v2/search/export", self._search_export),
            ("search_count", "GET", "/api/v2/search/count", self._search_count),
            ("search", "GET", "/api/v2/search", self._search),
            ("user_related", "GET", "/api/v2/users/{id}/related", self._user_related),
            ("users_search", "GET", "/api/v2/users/search", self._users_search),
            ("users_show_many", "GET", "/api/v2/users/show_many", self._users_show_many),
            ("user_show", "GET", "/api/v2/users/{id}", self._user_show),
        ]

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == self.authorization

    def error_body(self, status: int) -> Any:
        return {
            400: {"error": "InvalidValue", "description": "Invalid request"},
            401: {"error": "Couldn't authenticate you"},
            403: {
                "error": {
                    "title": "Forbidden",
                    "message": "You do not have access to this page. Please contact the "
                    "account owner of this help desk for further help.",
                }
            },
            404: {"error": "RecordNotFound", "description": "Not found"},
            422: {"error": "RecordInvalid", "description": "Record validation errors"},
            429: {
                "error": "APIRateLimitExceeded",
                "description": "Number of allowed API requests per minute exceeded",
            },
        }.get(status, {"error": "InternalError", "description": "Something went wrong"})

    def default_fault_headers(self, status: int) -> dict[str, str]:
        return {"Retry-After": "1"} if status == 429 else {}

    # -- routes --------------------------------------------------------------------------

    def _int_id(self, request: Request) -> int | None:
        raw = str(request.path_params["id"]).removesuffix(".json")
        return int(raw) if raw.isascii() and raw.isdigit() else None

    def _requested(self, request: Request, _payload: Any) -> Answer:
        user_id = self._int_id(request)
        if user_id is None or user_id not in self.users:
            return Answer(404, self.error_body(404))
        params = request.query_params
        size_text = params.get("page[size]", str(PAGE_MAX))
        if not size_text.isdigit() or not 1 <= int(size_text) <= PAGE_MAX:
            return Answer(400, _pagination_error("page[size] must be between 1 and 100"))
        size = int(size_text)
        sort_by = params.get("sort_by", "id")
        if sort_by not in _SORTABLE:
            sort_by = "id"
        descending = params.get("sort_order", "asc") == "desc"
        mine = [t for t in self.tickets.values() if t["requester_id"] == user_id]
        mine.sort(key=lambda t: (t[sort_by], t["id"]), reverse=descending)
        start = _start_of(params.get("page[after]"))
        if start is None:
            return Answer(400, _pagination_error("page[after] is not a valid cursor"))
        page = mine[start : start + size]
        has_more = start + size < len(mine)
        after_cursor = _cursor(start + len(page)) if page else None
        before_cursor = _cursor(start) if page else None
        base = f"{self.url}{request.url.path}?page[size]={size}"
        return Answer(
            200,
            {
                "tickets": page,
                "meta": {
                    "has_more": has_more,
                    "after_cursor": after_cursor,
                    "before_cursor": before_cursor,
                },
                "links": {
                    "next": f"{base}&page[after]={after_cursor}" if has_more else None,
                    "prev": f"{base}&page[before]={before_cursor}" if start else None,
                },
            },
        )

    def _searched(self, query: str | None, *, typed: bool) -> list[dict[str, Any]] | Answer:
        """Tickets matching `query` (oldest first), or the 400 Zendesk answers; `typed`:
        the query must say `type:ticket` (search, count) or must not (export)."""
        if not query:
            return Answer(400, {"error": "invalid", "description": "query is required"})
        terms: dict[str, set[str]] = {}
        for term in query.split():
            keyword, colon, value = term.partition(":")
            if not colon or keyword not in ("type", "requester", "status") or not value:
                return Answer(400, {"error": "invalid", "description": f"unsupported: {term}"})
            terms.setdefault(keyword, set()).add(value)
        if typed != ("type" in terms) or terms.get("type", {"ticket"}) != {"ticket"}:
            return Answer(400, {"error": "invalid", "description": "type is wrong here"})
        requesters = terms.get("requester")
        statuses = terms.get("status")
        indexed = self.search_snapshot if self.search_snapshot is not None else self.tickets
        found = [
            t
            for t in indexed.values()
            if (requesters is None or str(t["requester_id"]) in requesters)
            and (statuses is None or t["status"] in statuses)
        ]
        found.sort(key=lambda t: (t["created_at"], t["id"]))
        return found

    def _search_export(self, request: Request, _payload: Any) -> Answer:
        params = request.query_params
        if params.get("filter[type]") != "ticket":
            return Answer(400, {"error": "invalid", "description": "filter[type] is required"})
        found = self._searched(params.get("query"), typed=False)
        if isinstance(found, Answer):
            return found
        size_text = params.get("page[size]", "100")
        if not size_text.isdigit() or not 1 <= int(size_text) <= EXPORT_PAGE_MAX:
            return Answer(400, _pagination_error("page[size] must be between 1 and 1000"))
        size = int(size_text)
        # Zendesk's export: created_at descending, ties by id ascending (its cursor says so)
        found.sort(key=lambda t: t["id"])
        found.sort(key=lambda t: t["created_at"], reverse=True)
        start = _start_of(params.get("page[after]"))
        if start is None:
            return Answer(400, _pagination_error("page[after] is not a valid cursor"))
        page = found[start : start + size]
        has_more = start + size < len(found)
        after_cursor = _cursor(start + len(page)) if has_more else None
        return Answer(
            200,
            {
                "results": [{**t, "result_type": "ticket"} for t in page],
                "facets": None,
                "meta": {"has_more": has_more, "after_cursor": after_cursor, "before_cursor": None},
                "links": {"next": None, "prev": None},
            },
        )

    def _search(self, request: Request, _payload: Any) -> Answer:
        params = request.query_params
        found = self._searched(params.get("query"), typed=True)
        if isinstance(found, Answer):
            return found
        page_text, per_page_text = params.get("page", "1"), params.get("per_page", "100")
        if not (page_text.isdigit() and per_page_text.isdigit()):
            return Answer(400, _pagination_error("page and per_page are numbers"))
        page, per_page = int(page_text), int(per_page_text)
        if page < 1 or not 1 <= per_page <= PAGE_MAX:
            return Answer(400, _pagination_error("per_page must be between 1 and 100"))
        if page * per_page > SEARCH_RESULTS_MAX:
            # Zendesk's search answers at most 1,000 results (the export has no cap)
            return Answer(
                422,
                {"error": "query_response_too_large", "description": "past 1,000 results"},
            )
        sort_by = params.get("sort_by", "created_at")
        if sort_by in _SORTABLE:
            found.sort(key=lambda t: (t[sort_by], t["id"]))
        if params.get("sort_order", "desc") == "desc":
            found.reverse()
        start = (page - 1) * per_page
        chosen = found[start : start + per_page]
        more = start + per_page < min(len(found), SEARCH_RESULTS_MAX)
        return Answer(
            200,
            {
                "results": [{**t, "result_type": "ticket"} for t in chosen],
                "count": len(found),
                "facets": None,
                "next_page": f"{self.url}/api/v2/search?page={page + 1}" if more else None,
                "previous_page": None,
            },
        )

    def _search_count(self, request: Request, _payload: Any) -> Answer:
        found = self._searched(request.query_params.get("query"), typed=True)
        if isinstance(found, Answer):
            return found
        return Answer(200, {"count": len(found)})

    def _user_related(self, request: Request, _payload: Any) -> Answer:
        user_id = self._int_id(request)
        if user_id is None or user_id not in self.users:
            return Answer(404, self.error_body(404))
        requested = sum(1 for t in self.tickets.values() if t["requester_id"] == user_id)
        return Answer(
            200,
            {
                "user_related": {
                    "assigned_tickets": 0,
                    "ccd_tickets": 0,
                    "organization_subscriptions": 0,
                    "requested_tickets": requested,
                }
            },
        )

    def _ids_param(self, request: Request) -> list[int] | Answer:
        raw = request.query_params.get("ids")
        parts = [p.strip() for p in raw.split(",")] if raw else []
        if not parts or not all(p.isascii() and p.isdigit() for p in parts):
            return Answer(400, {"error": "InvalidValue", "description": "ids must be numbers"})
        if len(parts) > SHOW_MANY_MAX:
            return Answer(400, {"error": "InvalidValue", "description": "at most 100 ids"})
        return [int(p) for p in parts]

    def _show_many(self, request: Request, _payload: Any) -> Answer:
        ids = self._ids_param(request)
        if isinstance(ids, Answer):
            return ids
        found = [self.tickets[i] for i in dict.fromkeys(ids) if i in self.tickets]
        return Answer(
            200, {"tickets": found, "next_page": None, "previous_page": None, "count": len(found)}
        )

    def _ticket_show(self, request: Request, _payload: Any) -> Answer:
        id = self._int_id(request)
        if id is None or id not in self.tickets:
            return Answer(404, self.error_body(404))
        return Answer(200, {"ticket": self.tickets[id]})

    def _create(self, request: Request, payload: Any) -> Answer:
        key = request.headers.get("idempotency-key")
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        if key is not None and key in self.idempotency:
            seen_digest, answer = self.idempotency[key]
            if seen_digest != digest:
                return Answer(
                    400,
                    {
                        "error": "IdempotentRequestError",
                        "description": "The request parameters don't match the original request "
                        "made with this idempotency key",
                    },
                )
            replay = {**answer.headers, "x-idempotency-lookup": "hit"}
            return Answer(answer.status, answer.body, replay)
        answer = self._create_ticket(payload)
        if key is not None and answer.status == 201:
            self.idempotency[key] = (digest, answer)
            answer.headers["x-idempotency-lookup"] = "miss"
        return answer

    def _create_ticket(self, payload: Any) -> Answer:
        ticket = payload.get("ticket") if isinstance(payload, dict) else None
        if not isinstance(ticket, dict):
            return Answer(400, self.error_body(400))
        details: dict[str, list[dict[str, str]]] = {}
        comment = ticket.get("comment")
        body = comment.get("body") if isinstance(comment, dict) else None
        if not isinstance(body, str) or not body.strip():
            details["description"] = [
                {"description": "Description: cannot be blank", "error": "BlankValue"}
            ]
        requester = ticket.get("requester_id")
        if not isinstance(requester, int) or requester not in self.users:
            details["requester"] = [
                {"description": "Requester: is invalid", "error": "InvalidValue"}
            ]
        priority = ticket.get("priority")
        if priority is not None and priority not in ("urgent", "high", "normal", "low"):
            details["priority"] = [{"description": "Priority: is invalid", "error": "InvalidValue"}]
        subject = ticket.get("subject")
        if subject is not None and not isinstance(subject, str):
            details["subject"] = [{"description": "Subject: is invalid", "error": "InvalidValue"}]
        if details:
            return Answer(
                422,
                {
                    "error": "RecordInvalid",
                    "description": "Record validation errors",
                    "details": details,
                },
            )
        assert isinstance(requester, int)
        assert isinstance(body, str)
        created = self._new_ticket(
            requester,
            subject or body[:80],
            body,
            priority,
            datetime.now(UTC).replace(microsecond=0),
        )
        return Answer(
            201,
            {"ticket": created},
            {"Location": f"{self.url}/api/v2/tickets/{created['id']}.json"},
        )

    def _users_page(self, users: list[dict[str, Any]]) -> Answer:
        return Answer(
            200, {"users": users, "next_page": None, "previous_page": None, "count": len(users)}
        )

    def _users_search(self, request: Request, _payload: Any) -> Answer:
        query = request.query_params.get("query")
        external_id = request.query_params.get("external_id")
        if query is None and external_id is None:
            return Answer(400, {"error": "InvalidValue", "description": "query is required"})
        if external_id is not None:
            found = [u for u in self.users.values() if u.get("external_id") == external_id]
        elif query is not None and query.startswith("email:"):
            wanted = query.removeprefix("email:").strip().strip('"').lower()
            found = [u for u in self.users.values() if u["email"].lower() == wanted]
        else:
            text = (query or "").lower()
            found = [
                u
                for u in self.users.values()
                if text in u["email"].lower() or text in u["name"].lower()
            ]
        return self._users_page(found)

    def _users_show_many(self, request: Request, _payload: Any) -> Answer:
        ids = self._ids_param(request)
        if isinstance(ids, Answer):
            return ids
        return self._users_page([self.users[i] for i in dict.fromkeys(ids) if i in self.users])

    def _user_show(self, request: Request, _payload: Any) -> Answer:
        id = self._int_id(request)
        if id is None or id not in self.users:
            return Answer(404, self.error_body(404))
        return Answer(200, {"user": self.users[id]})


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _start_of(after: str | None) -> int | None:
    """Where a page starts: 0 without a cursor, None for a cursor that does not read."""
    return 0 if after is None else _read_cursor(after)


def _read_cursor(text: str) -> int | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(text.encode()))
    except (binascii.Error, ValueError):
        return None
    offset = value.get("o") if isinstance(value, dict) else None
    return offset if isinstance(offset, int) and offset >= 0 else None


def _pagination_error(description: str) -> dict[str, str]:
    return {"error": "InvalidPaginationParameter", "description": description}
