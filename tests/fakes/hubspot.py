"""A stateful HubSpot CRM (v3 objects API) over real HTTP, after HubSpot's public reference.

Routes (names for `fail`, `count`, `calls_to`):
- `batch_read`  POST  /crm/v3/objects/{object}/batch/read   at most 100 inputs; 207 with
                an OBJECT_NOT_FOUND error listing the ids it does not know
- `search`      POST  /crm/v3/objects/{object}/search       EQ / IN filters (IN: at most 100
                values, matched against the lower-cased value as HubSpot does), sorts,
                limit (at most 200), `after` paging; the body in the shape of HubSpot's
                spec (`search_shape_problem`: `sorts` strings, `after` required) or 400
- `read`        GET   /crm/v3/objects/{object}/{id}
- `update`      PATCH /crm/v3/objects/{object}/{id}         unknown properties and values
                rejected by `rejects` answer HubSpot's 400 VALIDATION_ERROR

    hubspot = FakeHubSpot()
    ada = hubspot.add(firstname="Ada", lastname="Lovelace", email="ada@example.com")
    with hubspot.running():
        ...  # HUBSPOT_API_BASE=hubspot.url, HUBSPOT_ACCESS_TOKEN=hubspot.token
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from tests.fakes.provider import Answer, Handler, StatefulFake

# HubSpot's published CRM v3 spec, PublicObjectSearchRequest: these fields are required,
# `sorts` and `properties` are arrays of strings, `after` a string, `limit` an integer.
SEARCH_REQUIRED = ("filterGroups", "sorts", "properties", "limit", "after")


def search_shape_problem(payload: dict[str, Any]) -> str | None:
    """What HubSpot's spec refuses in a search body (None: the shape is accepted)."""
    missing = [name for name in SEARCH_REQUIRED if name not in payload]
    if missing:
        return f"missing required fields: {', '.join(missing)}"
    for name in ("sorts", "properties"):
        value = payload[name]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return f"{name} must be an array of strings"
    if not isinstance(payload["after"], str):
        return "after must be a string"
    if not isinstance(payload["filterGroups"], list):
        return "filterGroups must be an array"
    return None


__all__ = ["SEARCH_REQUIRED", "FakeHubSpot", "search_shape_problem", "validation_error"]

BATCH_MAX = 100
IN_MAX = 100
SEARCH_LIMIT_MAX = 200
# Properties every portal has, besides the link properties the fake is given.
CONTACT_PROPERTIES = ("firstname", "lastname", "email", "company", "phone", "website")
COMPANY_PROPERTIES = ("name", "domain", "phone", "website")
# Always in an object's answer, asked for or not.
_DEFAULT_PROPERTIES = ("createdate", "hs_object_id", "lastmodifieddate")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _correlation() -> str:
    return str(uuid.uuid4())


def validation_error(prop: str, message: str = "invalid value", code: str = "INVALID") -> Any:
    """HubSpot's 400 for a property value it refuses (both the v3 `errors` list and the
    JSON embedded in `message`, which older clients parse)."""
    embedded = [{"isValid": False, "message": message, "error": code, "name": prop}]
    return {
        "status": "error",
        "message": "Property values were not valid: " + json.dumps(embedded),
        "correlationId": _correlation(),
        "category": "VALIDATION_ERROR",
        "errors": [{"message": message, "code": code, "context": {"propertyName": [prop]}}],
    }


class FakeHubSpot(StatefulFake):
    provider = "hubspot"

    def __init__(
        self,
        *,
        token: str = "hubspot-test-token",
        object_type: str = "contacts",
        link_properties: tuple[str, ...] = ("stripe_customer_id", "zendesk_user_id"),
        latency: float = 0.0,
    ) -> None:
        self.token = token
        self.object_type = object_type
        own = CONTACT_PROPERTIES if object_type == "contacts" else COMPANY_PROPERTIES
        self.known_properties = {*own, *link_properties}
        self.records: dict[str, dict[str, str | None]] = {}
        self._meta: dict[str, dict[str, str]] = {}
        # property -> predicate that says a value is invalid (HubSpot answers 400)
        self.rejects: dict[str, Callable[[str], bool]] = {}
        self._ids = itertools.count(7001)
        super().__init__(latency=latency)

    def clear_data(self) -> None:
        with self.lock:
            self.records.clear()
            self._meta.clear()
            self.rejects.clear()

    # -- seeding -------------------------------------------------------------------------

    def add(self, id: str | None = None, **properties: str | None) -> str:
        """Store a record; answers its id (numeric, as HubSpot's)."""
        with self.lock:
            record_id = id or str(next(self._ids))
            unknown = set(properties) - self.known_properties
            if unknown:
                raise ValueError(f"the fake portal has no properties {sorted(unknown)}")
            self.records[record_id] = dict(properties)
            now = _now()
            self._meta[record_id] = {"createdAt": now, "updatedAt": now}
            return record_id

    def get(self, id: str) -> dict[str, str | None]:
        with self.lock:
            return dict(self.records[id])

    # -- StatefulFake --------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, str, Handler]]:
        base = "/crm/v3/objects/{object_type}"
        return [
            ("batch_read", "POST", base + "/batch/read", self._batch_read),
            ("search", "POST", base + "/search", self._search),
            ("read", "GET", base + "/{id}", self._read),
            ("update", "PATCH", base + "/{id}", self._update),
        ]

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    def error_body(self, status: int) -> Any:
        if status == 429:
            return {
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": _correlation(),
                "policyName": "TEN_SECONDLY_ROLLING",
            }
        category, message = {
            400: ("VALIDATION_ERROR", "Invalid input JSON on line 1"),
            401: (
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 "
                "authentication and you can find more details at https://developers."
                "hubspot.com/docs/methods/auth/oauth-overview",
            ),
            403: (
                "MISSING_SCOPES",
                "This app hasn't been granted all required scopes to make this call.",
            ),
            404: ("OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric."),
        }.get(status, ("INTERNAL_ERROR", "internal error"))
        return {
            "status": "error",
            "message": message,
            "correlationId": _correlation(),
            "category": category,
        }

    # -- routes --------------------------------------------------------------------------

    def _object(self, id: str, wanted: list[str]) -> dict[str, Any]:
        stored = self.records[id]
        properties: dict[str, Any] = {
            name: stored.get(name) for name in wanted if name in self.known_properties
        }
        meta = self._meta[id]
        properties.update(
            createdate=meta["createdAt"], hs_object_id=id, lastmodifieddate=meta["updatedAt"]
        )
        return {
            "id": id,
            "properties": properties,
            "createdAt": meta["createdAt"],
            "updatedAt": meta["updatedAt"],
            "archived": False,
        }

    def _wrong_object(self, request: Request) -> Answer | None:
        if request.path_params["object_type"] != self.object_type:
            return Answer(404, self.error_body(404))
        return None

    def _batch_read(self, request: Request, payload: Any) -> Answer:
        wrong = self._wrong_object(request)
        if wrong:
            return wrong
        inputs = payload.get("inputs") if isinstance(payload, dict) else None
        if not isinstance(inputs, list) or not all(
            isinstance(i, dict) and isinstance(i.get("id"), str) for i in inputs
        ):
            return Answer(400, self.error_body(400))
        if len(inputs) > BATCH_MAX:
            return Answer(400, validation_error("inputs", f"at most {BATCH_MAX} inputs"))
        wanted = payload.get("properties") or []
        started = _now()
        results = []
        missing = []
        for item in inputs:
            id = item["id"]
            if id in self.records:
                results.append(self._object(id, wanted))
            else:
                missing.append(id)
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": _now(),
        }
        if not missing:
            return Answer(200, body)
        kind = "CONTACT" if self.object_type == "contacts" else "COMPANY"
        body["numErrors"] = 1
        body["errors"] = [
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": f"Could not get some {kind} objects, they may be deleted or not "
                "exist. Check that ids are valid.",
                "context": {"ids": missing},
            }
        ]
        return Answer(207, body)

    def _matches(self, record: dict[str, str | None], flt: dict[str, Any]) -> bool | None:
        """Whether one filter matches; None when the filter is not one HubSpot accepts."""
        prop = flt.get("propertyName")
        stored = record.get(prop) if isinstance(prop, str) else None
        operator = flt.get("operator")
        if operator == "EQ" and isinstance(flt.get("value"), str):
            return stored is not None and stored.lower() == flt["value"].lower()
        if operator == "IN" and isinstance(flt.get("values"), list):
            # HubSpot compares IN values with the lower-cased property value
            return stored is not None and stored.lower() in flt["values"]
        return None

    def _search(self, request: Request, payload: Any) -> Answer:
        wrong = self._wrong_object(request)
        if wrong:
            return wrong
        if not isinstance(payload, dict):
            return Answer(400, self.error_body(400))
        shape = search_shape_problem(payload)
        if shape is not None:
            return Answer(400, validation_error("body", shape))
        groups = payload.get("filterGroups") or []
        for group in groups:
            for flt in group.get("filters", []):
                values = flt.get("values")
                too_many = isinstance(values, list) and len(values) > IN_MAX
                if flt.get("operator") == "IN" and too_many:
                    return Answer(400, validation_error("values", f"at most {IN_MAX}"))
        limit = payload.get("limit", 10)
        if not isinstance(limit, int) or not 0 < limit <= SEARCH_LIMIT_MAX:
            return Answer(400, validation_error("limit", f"limit must be 1-{SEARCH_LIMIT_MAX}"))
        matched = []
        for id, record in self.records.items():
            if not groups:
                matched.append(id)
                continue
            for group in groups:
                verdicts = [self._matches(record, f) for f in group.get("filters", [])]
                if any(v is None for v in verdicts):
                    return Answer(400, self.error_body(400))
                if all(verdicts):
                    matched.append(id)
                    break
        # a sort is a property name, "-name" for descending; the fake sorts by id only
        descending = "-hs_object_id" in payload["sorts"]
        matched.sort(key=int, reverse=descending)
        start = int(payload.get("after") or 0)
        page = matched[start : start + limit]
        wanted = payload.get("properties") or ["email", "firstname", "lastname"]
        body: dict[str, Any] = {
            "total": len(matched),
            "results": [self._object(id, wanted) for id in page],
        }
        if start + limit < len(matched):
            after = str(start + limit)
            body["paging"] = {"next": {"after": after, "link": f"?after={after}"}}
        return Answer(200, body)

    def _read(self, request: Request, _payload: Any) -> Answer:
        wrong = self._wrong_object(request)
        if wrong:
            return wrong
        id = request.path_params["id"]
        if id not in self.records:
            return Answer(404, self.error_body(404))
        wanted = request.query_params.get("properties", "").split(",")
        return Answer(200, self._object(id, [w for w in wanted if w]))

    def _update(self, request: Request, payload: Any) -> Answer:
        wrong = self._wrong_object(request)
        if wrong:
            return wrong
        id = request.path_params["id"]
        if id not in self.records:
            return Answer(404, self.error_body(404))
        properties = payload.get("properties") if isinstance(payload, dict) else None
        if not isinstance(properties, dict):
            return Answer(400, self.error_body(400))
        for name, value in properties.items():
            if name not in self.known_properties:
                missing = f'Property "{name}" does not exist'
                return Answer(400, validation_error(name, missing, "PROPERTY_DOESNT_EXIST"))
            if not isinstance(value, str):
                return Answer(400, validation_error(name, "values must be strings"))
            reject = self.rejects.get(name)
            if reject is not None and reject(value):
                return Answer(400, validation_error(name, f"{value!r} is not a valid {name}"))
        stored = self.records[id]
        for name, value in properties.items():
            stored[name] = value or None  # an empty string clears a property
        self._meta[id]["updatedAt"] = _now()
        # the answer carries what was written plus the default properties, not the record
        return Answer(200, self._object(id, list(properties)))
