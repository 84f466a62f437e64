"""HubSpot CRM adapter (CRM_SOURCE=hubspot): a contact or a company is "the customer".

- customers: `POST /crm/v3/objects/{object}/batch/read`, at most 100 ids a call, the
  properties named explicitly; a 207 answer is mapped id by id (OBJECT_NOT_FOUND -> None).
- customer_ids_by_link: `POST /crm/v3/objects/{object}/search` with one IN filter of at
  most 100 values on the link property.
- update_profile: read the record, then `PATCH /crm/v3/objects/{object}/{id}`; the answer is
  the record as stored after the write.

HubSpot's JSON is parsed into domain models here and goes no further; its error messages
are logged by category and correlation id, never shown to callers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import httpx
import msgspec

from gateway.domain import Customer, ProfileChanges
from gateway.errors import BadUserInput, IntegrationUnavailable, NotFound
from gateway.redis_client import RedisClient
from gateway.settings import RateLimit, Settings
from gateway.sources.answers import ProviderAnswers, decode_or_none
from gateway.sources.fanout import batched
from gateway.upstream import BreakerState, RateLimiter, SlotUnavailable, UpstreamClient

__all__ = ["BATCH_SIZE", "SEARCH_RATE", "HubSpotCrm", "search_body"]

log = logging.getLogger("gateway.sources.hubspot")

# HubSpot's limits: 100 inputs per batch read, 100 values per IN filter.
BATCH_SIZE = 100
# The search endpoints have a budget of their own on top of the account's: 5 requests a
# second per token. Search serves only link look-ups, so waiting for it is rare.
SEARCH_RATE = RateLimit(5, 1.0)
# Pages of one search followed at most; more than one page means duplicated link values.
_SEARCH_PAGES = 5
_SEARCH_PAGE_SIZE = 100

_CONTACT_PROPERTIES = ("firstname", "lastname", "email", "company", "phone")
_COMPANY_PROPERTIES = ("name", "phone")
# Which of our fields a rejected HubSpot property belongs to.
_CONTACT_FIELDS = {"firstname": "name", "lastname": "name", "company": "company", "phone": "phone"}
_COMPANY_FIELDS = {"name": "name", "phone": "phone"}
_INVALID_PROPERTIES = "Property values were not valid: "


class _Record(msgspec.Struct):
    id: str
    properties: dict[str, Any] = {}


class _BatchError(msgspec.Struct):
    category: str = ""
    context: dict[str, Any] = {}


class _BatchAnswer(msgspec.Struct):
    results: list[_Record] = []
    errors: list[_BatchError] = []


class _Next(msgspec.Struct):
    after: str | None = None


class _Paging(msgspec.Struct):
    next: _Next | None = None


class _SearchAnswer(msgspec.Struct):
    results: list[_Record] = []
    paging: _Paging | None = None


class _ErrorDetail(msgspec.Struct):
    context: dict[str, Any] = {}


class _ErrorAnswer(msgspec.Struct, rename="camel"):
    category: str = ""
    message: str = ""
    correlation_id: str = ""
    errors: list[_ErrorDetail] = []


def _object_id(value: str) -> bool:
    """HubSpot record ids are decimal numbers; anything else cannot name a record."""
    return value.isascii() and value.isdigit()


def _text(properties: Mapping[str, Any], name: str) -> str | None:
    value = properties.get(name)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        return None
    return value.strip() or None


def search_body(prop: str, values: list[str], after: str | None) -> dict[str, Any]:
    """The body of `POST /crm/v3/objects/{object}/search` as HubSpot's published spec
    (PublicObjectSearchRequest) has it: every field it requires (`filterGroups`,
    `properties`, `sorts`, `limit`, `after`), `sorts` as strings (a property name, ascending:
    HubSpot's documented form; objects are what the spec refuses), `after` "0" on page one."""
    return {
        "filterGroups": [{"filters": [{"propertyName": prop, "operator": "IN", "values": values}]}],
        "properties": [prop],
        # oldest record first: when two records carry one link, the first one wins
        "sorts": ["hs_object_id"],
        "limit": _SEARCH_PAGE_SIZE,
        "after": after if after is not None else "0",
    }


class HubSpotCrm:
    """The CRM protocol of gateway.sources.base over HubSpot's CRM v3 objects API."""

    name = "hubspot"
    _answers = ProviderAnswers(name, log)

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        token = settings.hubspot_access_token
        if token is None or not token.get_secret_value():
            raise ValueError("CRM_SOURCE=hubspot needs HUBSPOT_ACCESS_TOKEN (a private-app token)")
        self.crm_object = settings.hubspot_object
        self._contacts = self.crm_object == "contacts"
        self._path = f"/crm/v3/objects/{self.crm_object}"
        self._links = {
            "billing": settings.hubspot_billing_id_property,
            "helpdesk": settings.hubspot_helpdesk_id_property,
        }
        own = _CONTACT_PROPERTIES if self._contacts else _COMPANY_PROPERTIES
        self.properties = list(dict.fromkeys([*own, *self._links.values()]))
        self._fields = _CONTACT_FIELDS if self._contacts else _COMPANY_FIELDS
        self._client = UpstreamClient(
            self.name,
            base_url=settings.hubspot_api_base,
            settings=settings,
            redis=redis,
            headers={"Authorization": f"Bearer {token.get_secret_value()}"},
            transport=transport,
        )
        self._search_budget = RateLimiter(
            self.name,
            SEARCH_RATE,
            key=f"{settings.cache_prefix}ratelimit:{self.name}:search",
            redis=redis,
        )
        self._max_wait = settings.upstream_timeout

    @property
    def breaker_state(self) -> BreakerState:
        return self._client.breaker_state

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- reads ---------------------------------------------------------------------------

    async def customers(self, ids: Sequence[str]) -> list[Customer | Exception | None]:
        """Customers by HubSpot record id: one batch read per 100 distinct ids."""
        wanted = [id for id in dict.fromkeys(ids) if _object_id(id)]
        found = await batched(wanted, BATCH_SIZE, self._read)
        return [
            self._customer(record) if isinstance(record, _Record) else record
            for record in (found.get(id) for id in ids)
        ]

    async def _read(self, batch: list[str]) -> dict[str, _Record | Exception | None]:
        """One batch read: each id's record, None when HubSpot does not know it."""
        operation = "customers.batch_read"
        response = await self._client.request(
            "POST",
            f"{self._path}/batch/read",
            operation=operation,
            json={
                "inputs": [{"id": id} for id in batch],
                "properties": self.properties,
                "propertiesWithHistory": [],
            },
            idempotent=True,  # a POST that only reads
        )
        status = response.status_code
        if status == 404 and self._error_category(response) == "OBJECT_NOT_FOUND":
            return dict.fromkeys(batch)
        if status not in (200, 207):
            raise self._failure(response, operation)
        answer = self._answers.decode(response, _BatchAnswer, operation)
        out: dict[str, _Record | Exception | None] = dict.fromkeys(batch)
        for record in answer.results:
            if record.id in out:
                out[record.id] = record
        for error in answer.errors:
            if error.category == "OBJECT_NOT_FOUND":
                continue  # those ids stay None
            log.warning(
                "hubspot batch read failed for some ids",
                extra={"provider": self.name, "operation": operation, "category": error.category},
            )
            failure = IntegrationUnavailable(self.name, "hubspot could not read this customer")
            ids = error.context.get("ids")
            for id in ids if isinstance(ids, list) else []:
                if isinstance(id, str) and out.get(id) is None and id in out:
                    out[id] = failure
        return out

    def _customer(self, record: _Record) -> Customer:
        p = record.properties
        if self._contacts:
            parts = (_text(p, "firstname"), _text(p, "lastname"))
            name = " ".join(part for part in parts if part) or None
            company = _text(p, "company")
        else:
            name = company = _text(p, "name")
        return Customer(
            id=record.id,
            name=name,
            email=_text(p, "email") if self._contacts else None,
            company=company,
            phone=_text(p, "phone"),
            billing_id=_text(p, self._links["billing"]),
            helpdesk_id=_text(p, self._links["helpdesk"]),
        )

    async def customer_ids_by_link(
        self, system: str, external_ids: Sequence[str]
    ) -> list[str | Exception | None]:
        """HubSpot ids of the records whose link property is each id (one search per 100)."""
        prop = self._links.get(system)
        if prop is None:
            raise ValueError(f"unknown link system {system!r}: expected billing or helpdesk")
        # HubSpot's IN operator wants string values in lower case and matches regardless
        # of case, so the ids are compared in lower case too.
        wanted = list(dict.fromkeys(e.strip().lower() for e in external_ids if e.strip()))
        found = await batched(wanted, BATCH_SIZE, partial(self._search, prop))
        return [found.get(e.strip().lower()) for e in external_ids]

    async def _search(self, prop: str, values: list[str]) -> dict[str, str | None]:
        """One IN search of `prop`, paged through: the first record of each value."""
        operation = "customers.search"
        out: dict[str, str | None] = dict.fromkeys(values)
        after: str | None = None
        for _ in range(_SEARCH_PAGES):
            await self._search_slot()
            body = search_body(prop, values, after)
            response = await self._client.request(
                "POST", f"{self._path}/search", operation=operation, json=body, idempotent=True
            )
            if response.status_code != 200:
                raise self._failure(response, operation)
            answer = self._answers.decode(response, _SearchAnswer, operation)
            for record in answer.results:
                value = _text(record.properties, prop)
                key = value.lower() if value else None
                if key in out and out[key] is None:
                    out[key] = record.id
            after = answer.paging.next.after if answer.paging and answer.paging.next else None
            if after is None or all(v is not None for v in out.values()):
                break
        return out

    async def _search_slot(self) -> None:
        try:
            wait = await self._search_budget.reserve(max_wait=self._max_wait)
        except SlotUnavailable as exc:
            raise IntegrationUnavailable(
                self.name, "hubspot search budget is spent; try again later", retry_after=exc.wait
            ) from None
        if wait > 0:
            await asyncio.sleep(wait)

    # -- writes --------------------------------------------------------------------------

    async def update_profile(self, customer_id: str, changes: ProfileChanges) -> Customer:
        """Write the changed fields; answers the record as stored after the write."""
        if not _object_id(customer_id):
            raise NotFound()
        properties = self._write_properties(changes)
        # Read first: a PATCH answer carries only some properties, and a failed read here
        # leaves nothing written, so the caller is never told "failed" about a done write.
        current = (await self._read([customer_id]))[customer_id]
        if current is None:
            raise NotFound()
        if isinstance(current, Exception):
            raise current
        operation = "customers.update"
        response = await self._client.request(
            "PATCH",
            f"{self._path}/{customer_id}",
            operation=operation,
            json={"properties": properties},
            idempotent=True,  # it sets absolute values: sending it twice changes nothing more
        )
        status = response.status_code
        if status == 404:
            raise NotFound()
        if status == 400:
            raise self._rejected(response, operation)
        if status != 200:
            raise self._failure(response, operation)
        written = self._answers.decode(response, _Record, operation)
        stored = {**current.properties, **properties}
        # HubSpot's answer wins for what it returned (it may normalise what we sent)
        stored.update({k: v for k, v in written.properties.items() if k in stored})
        return self._customer(_Record(id=customer_id, properties=stored))

    def _write_properties(self, changes: ProfileChanges) -> dict[str, str]:
        properties: dict[str, str] = {}
        if self._contacts:
            if changes.name is not None:
                first, _, last = " ".join(changes.name.split()).partition(" ")
                properties["firstname"] = first
                properties["lastname"] = last  # an empty string clears it in HubSpot
            if changes.company is not None:
                properties["company"] = changes.company
        else:
            if changes.company is not None:
                raise BadUserInput(
                    "a company customer has no separate company field: change its name",
                    field="company",
                )
            if changes.name is not None:
                properties["name"] = changes.name
        if changes.phone is not None:
            properties["phone"] = changes.phone
        if not properties:
            raise BadUserInput("nothing to update: give name, phone or company", field="input")
        return properties

    def _rejected(self, response: httpx.Response, operation: str) -> Exception:
        """A 400 on a write: BAD_USER_INPUT when HubSpot names a field we sent, else ours."""
        answer = decode_or_none(response, _ErrorAnswer)
        if answer is not None and answer.category == "VALIDATION_ERROR":
            fields = {self._fields.get(p) for p in _rejected_properties(answer)}
            fields.discard(None)
            if len(fields) == 1:
                [field] = fields
                self._log_error(response, operation, answer)
                return BadUserInput(f"the CRM did not accept this {field}", field=field)
        return self._failure(response, operation)

    # -- answers -------------------------------------------------------------------------

    def _error_category(self, response: httpx.Response) -> str:
        answer = decode_or_none(response, _ErrorAnswer)
        return answer.category if answer is not None else ""

    def _failure(self, response: httpx.Response, operation: str) -> IntegrationUnavailable:
        """Any other provider answer: our request or our credentials are wrong."""
        self._log_error(response, operation, decode_or_none(response, _ErrorAnswer))
        return self._answers.refused(response.status_code)

    def _log_error(
        self, response: httpx.Response, operation: str, answer: _ErrorAnswer | None
    ) -> None:
        # The category and correlation id are what HubSpot support asks for; the message
        # can quote the values we sent, so it stays out of the logs.
        self._answers.log_refusal(
            response,
            operation,
            {
                "category": answer.category if answer else None,
                "correlation_id": answer.correlation_id if answer else None,
            },
        )


def _rejected_properties(answer: _ErrorAnswer) -> set[str]:
    """The property names a VALIDATION_ERROR names, in either of HubSpot's two shapes."""
    names: set[str] = set()
    for detail in answer.errors:
        value = detail.context.get("propertyName")
        if isinstance(value, list):
            names.update(v for v in value if isinstance(v, str))
    if not names and answer.message.startswith(_INVALID_PROPERTIES):
        try:
            listed = json.loads(answer.message[len(_INVALID_PROPERTIES) :])
        except ValueError:
            listed = []
        for item in listed if isinstance(listed, list) else []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                names.add(item["name"])
    return names
