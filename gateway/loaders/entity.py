"""EntityLoader: a DataLoader whose batch goes through the entity cache to one source call.

Loaders are built with each request's context, never at import time: their memo is the
request's ("identical keys in one request are fetched once").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from functools import cached_property
from typing import Any, TypeVar

from aiodataloader import DataLoader

from gateway import tracing
from gateway.cache.codec import Codec
from gateway.cache.entity import EntityCache, StaleHit
from gateway.domain import (
    Customer,
    FileQuery,
    Invoice,
    InvoiceQuery,
    Page,
    StoredFile,
    Subscription,
    Ticket,
    TicketQuery,
)
from gateway.observability import count_source_call
from gateway.sources.fanout import filled
from gateway.sources.registry import Sources

__all__ = ["CUSTOMER_CODEC", "LINK_CODEC", "EntityLoader", "Loaders"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Q = TypeVar("Q")
P = TypeVar("P")


async def _nothing() -> list[Any]:
    return []


CUSTOMER_CODEC = Codec[Customer](Customer)
_invoice = Codec[Invoice](Invoice)
_invoice_page = Codec[Page[Invoice]](Page[Invoice])
_subscriptions = Codec[list[Subscription]](list[Subscription])
_ticket = Codec[Ticket](Ticket)
_ticket_page = Codec[Page[Ticket]](Page[Ticket])
_file = Codec[StoredFile](StoredFile)
_file_page = Codec[Page[StoredFile]](Page[StoredFile])
LINK_CODEC = Codec[str](str)
_count = Codec[int](int)
# What an email look-up that found no account is cached as, for its kind's TTL like a found
# link: a customer without a billing or help-desk account then costs no provider search per
# page (gateway.resolvers.links reads it as None).
_NO_ACCOUNT = ""


# A look-up by email is keyed (email, CRM id of the customer whose email it is): the email
# only as its pseudonym in the cache key, the CRM id as the entry's tag, so that erasing the
# customer drops the link.
EmailOf = tuple[str, str]


def _no_account_kept(
    fetch: Callable[[Sequence[str]], Awaitable[Sequence[str | Exception | None]]],
) -> Callable[[Sequence[EmailOf]], Awaitable[list[str | Exception]]]:
    async def look_up(keys: Sequence[EmailOf]) -> list[str | Exception]:
        found = await fetch([email for email, _customer_id in keys])
        return [_NO_ACCOUNT if value is None else value for value in found]

    return look_up


def _owner_tag(key: EmailOf, _value: str) -> list[str]:
    return [f"customer:{key[1]}"]


class EntityLoader(DataLoader[K, V]):
    """Batches keys of one tick into one cache lookup and at most one source call."""

    def __init__(
        self,
        *,
        kind: str,
        entity: str,
        source: str,
        fetch: Callable[[Sequence[K]], Awaitable[Sequence[Any]]],
        codec: Codec[V],
        cache: EntityCache | None,
        cache_id: Callable[[K], str] = str,
        tags: Callable[[K, V], Sequence[str]] | None = None,
        on_load: Callable[[str, Sequence[str]], None] | None = None,
        batch: bool = True,
    ) -> None:
        super().__init__(max_batch_size=None if batch else 1, cache=batch)
        self.kind = kind
        self.entity = entity
        self.source = source
        self._source_fetch = fetch
        self._codec = codec
        self._entity_cache = cache
        self._cache_id = cache_id
        self._tags = tags
        self._on_load = on_load
        self.stale: dict[K, float] = {}  # key -> age of the stale copy served

    async def batch_load_fn(self, keys: Sequence[K]) -> list[Any]:
        if not tracing.ENABLED:
            return await self._load_batch(keys)
        attributes = {
            "gateway.kind": self.kind,
            "gateway.source": self.source,
            "gateway.batch_size": len(keys),
        }
        with tracing.span(f"load {self.kind}.{self.entity}", attributes):
            return await self._load_batch(keys)

    async def _fetch(self, keys: Sequence[K]) -> Sequence[Any]:
        count_source_call()
        return await self._source_fetch(keys)

    async def _load_batch(self, keys: Sequence[K]) -> list[Any]:
        if self._entity_cache is None:
            results = list(await self._fetch(keys))
        else:
            by_id = {self._cache_id(key): key for key in keys}
            stale: list[StaleHit] = []

            async def fetch(ids: list[str]) -> Sequence[Any]:
                return await self._fetch([by_id[i] for i in ids])

            tags = None
            if self._tags is not None:
                tag_of = self._tags

                def tags(id: str, value: V) -> Sequence[str]:
                    return tag_of(by_id[id], value)

            results = await self._entity_cache.load_many(
                self.kind,
                self.entity,
                list(by_id),
                fetch,
                self._codec,
                tags=tags,
                stale=stale,
            )
            for hit in stale:
                self.stale[by_id[hit.id]] = hit.age
            by_position = dict(zip(by_id, results, strict=True))
            results = [by_position[self._cache_id(key)] for key in keys]
        if self._on_load is not None:
            # what this request touched: the response cache tags and times its entry by it
            for key, value in zip(keys, results, strict=True):
                if value is not None and not isinstance(value, BaseException):
                    self._on_load(self.kind, self._tags(key, value) if self._tags else ())
        return results


def _count_id(query: InvoiceQuery | TicketQuery) -> str:
    owner = query.billing_id if isinstance(query, InvoiceQuery) else query.requester_id
    return f"{owner}:{query.status.value if query.status else ''}"


def _page_id(query: InvoiceQuery | TicketQuery | FileQuery) -> str:
    owner = (
        query.billing_id
        if isinstance(query, InvoiceQuery)
        else query.requester_id
        if isinstance(query, TicketQuery)
        else query.customer_id
    )
    status = getattr(query, "status", None)
    return f"{owner}:{query.first}:{query.after or ''}:{status.value if status else ''}"


class Loaders:
    """The loaders of one request, each created on first use."""

    def __init__(
        self,
        sources: Sources,
        cache: EntityCache | None,
        *,
        batching: bool = True,
        on_load: Callable[[str, Sequence[str]], None] | None = None,
    ) -> None:
        self.sources = sources
        self._cache = cache if batching else None
        self._batching = batching
        self._on_load = on_load

    def _pseudonym(self, key: EmailOf) -> str:
        assert self._cache is not None  # cache_id is only asked with a cache
        return self._cache.pseudonym(key[0])

    def _loader(self, **kwargs: Any) -> EntityLoader[Any, Any]:
        return EntityLoader(
            cache=self._cache, batch=self._batching, on_load=self._on_load, **kwargs
        )

    def _skipping_changed(
        self,
        kind: str,
        owner: Callable[[Q], str],
        indexed: Callable[[Sequence[Q]], Awaitable[list[P]]],
        lists: Callable[[Sequence[Q]], Awaitable[list[P]]],
    ) -> Callable[[Sequence[Q]], Awaitable[list[P]]]:
        """`indexed`, except for owners a webhook or mutation changed within the index's
        lag (EntityCache.note_changes): their pages come from `lists`, so the change shows
        on a staff page at once, as on the customer's own."""
        cache = self._cache

        async def fetch(queries: Sequence[Q]) -> list[P]:
            changed = (
                await cache.changed_recently(kind, [owner(q) for q in queries]) if cache else set()
            )
            if not changed:
                return await indexed(queries)
            fresh = [i for i, q in enumerate(queries) if owner(q) in changed]
            rest = [i for i, q in enumerate(queries) if owner(q) not in changed]
            listed, searched = await asyncio.gather(
                lists([queries[i] for i in fresh]),
                indexed([queries[i] for i in rest]) if rest else _nothing(),
            )
            out: list[P | None] = [None] * len(queries)
            for positions, answers in ((fresh, listed), (rest, searched)):
                for position, answer in zip(positions, answers, strict=True):
                    out[position] = answer
            return filled(out)

        return fetch

    @cached_property
    def customer(self) -> EntityLoader[str, Customer]:
        return self._loader(
            kind="crm",
            entity="customer",
            source=self.sources.crm.name,
            fetch=self.sources.crm.customers,
            codec=CUSTOMER_CODEC,
            tags=lambda id, _c: [f"customer:{id}"],
        )

    @cached_property
    def customer_id_by_link(self) -> EntityLoader[str, str]:
        """`billing:{id}` or `helpdesk:{id}` -> the CRM id of that customer."""
        crm = self.sources.crm

        async def fetch(keys: Sequence[str]) -> list[str | Exception | None]:
            out: list[str | Exception | None] = [None] * len(keys)
            by_system: dict[str, list[int]] = {}
            for index, key in enumerate(keys):
                by_system.setdefault(key.partition(":")[0], []).append(index)
            for system, positions in by_system.items():
                found = await crm.customer_ids_by_link(
                    system, [keys[i].partition(":")[2] for i in positions]
                )
                for position, value in zip(positions, found, strict=True):
                    out[position] = value
            return out

        return self._loader(
            kind="crm",
            entity="link",
            source=crm.name,
            fetch=fetch,
            codec=LINK_CODEC,
            tags=lambda _key, customer_id: [f"customer:{customer_id}"],
        )

    @cached_property
    def invoice_page(self) -> EntityLoader[InvoiceQuery, Page[Invoice]]:
        return self._loader(
            kind="billing",
            entity="invoices",
            source=self.sources.billing.name,
            fetch=self.sources.billing.invoice_pages,
            codec=_invoice_page,
            cache_id=_page_id,
            tags=lambda q, _p: [f"billing:{q.billing_id}"],
        )

    @cached_property
    def invoice_page_indexed(self) -> EntityLoader[InvoiceQuery, Page[Invoice]]:
        """Pages for views of many customers: they may come from the provider's search
        index, so they are cached apart from the customer's own (`invoice_page`), which a
        webhook's invalidation must leave read-after-write."""
        return self._loader(
            kind="billing",
            entity="invoices-indexed",
            source=self.sources.billing.name,
            fetch=self._skipping_changed(
                "billing",
                lambda q: q.billing_id,
                self.sources.billing.invoice_pages_indexed,
                self.sources.billing.invoice_pages,
            ),
            codec=_invoice_page,
            cache_id=_page_id,
            tags=lambda q, _p: [f"billing:{q.billing_id}"],
        )

    @cached_property
    def invoice_count(self) -> EntityLoader[InvoiceQuery, int]:
        """A customer's invoice total (of a status), keyed without `first` and `after`."""
        return self._loader(
            kind="billing",
            entity="invoice-count",
            source=self.sources.billing.name,
            fetch=self.sources.billing.invoice_counts,
            codec=_count,
            cache_id=_count_id,
            tags=lambda q, _n: [f"billing:{q.billing_id}"],
        )

    @cached_property
    def invoice(self) -> EntityLoader[str, Invoice]:
        return self._loader(
            kind="billing",
            entity="invoice",
            source=self.sources.billing.name,
            fetch=self.sources.billing.invoices,
            codec=_invoice,
            tags=lambda _id, inv: [f"billing:{inv.billing_customer_id}", f"invoice:{inv.id}"],
        )

    @cached_property
    def subscriptions(self) -> EntityLoader[str, list[Subscription]]:
        return self._loader(
            kind="billing",
            entity="subscriptions",
            source=self.sources.billing.name,
            fetch=self.sources.billing.subscriptions,
            codec=_subscriptions,
            tags=lambda billing_id, _s: [f"billing:{billing_id}"],
        )

    @cached_property
    def billing_link(self) -> EntityLoader[EmailOf, str]:
        """(email, CRM id) -> the billing id found by that email ("" where none was)."""
        return self._loader(
            kind="billing",
            entity="link",
            source=self.sources.billing.name,
            fetch=_no_account_kept(self.sources.billing.billing_ids_by_email),
            codec=LINK_CODEC,
            cache_id=self._pseudonym,
            tags=_owner_tag,
        )

    @cached_property
    def ticket_page(self) -> EntityLoader[TicketQuery, Page[Ticket]]:
        return self._loader(
            kind="helpdesk",
            entity="tickets",
            source=self.sources.helpdesk.name,
            fetch=self.sources.helpdesk.ticket_pages,
            codec=_ticket_page,
            cache_id=_page_id,
            tags=lambda q, _p: [f"helpdesk:{q.requester_id}"],
        )

    @cached_property
    def ticket_page_indexed(self) -> EntityLoader[TicketQuery, Page[Ticket]]:
        """Pages for views of many customers, cached apart (see `invoice_page_indexed`)."""
        return self._loader(
            kind="helpdesk",
            entity="tickets-indexed",
            source=self.sources.helpdesk.name,
            fetch=self._skipping_changed(
                "helpdesk",
                lambda q: q.requester_id,
                self.sources.helpdesk.ticket_pages_indexed,
                self.sources.helpdesk.ticket_pages,
            ),
            codec=_ticket_page,
            cache_id=_page_id,
            tags=lambda q, _p: [f"helpdesk:{q.requester_id}"],
        )

    @cached_property
    def ticket_count(self) -> EntityLoader[TicketQuery, int]:
        """A requester's ticket total (of a status), keyed without `first` and `after`."""
        return self._loader(
            kind="helpdesk",
            entity="ticket-count",
            source=self.sources.helpdesk.name,
            fetch=self.sources.helpdesk.ticket_counts,
            codec=_count,
            cache_id=_count_id,
            tags=lambda q, _n: [f"helpdesk:{q.requester_id}"],
        )

    @cached_property
    def ticket(self) -> EntityLoader[str, Ticket]:
        return self._loader(
            kind="helpdesk",
            entity="ticket",
            source=self.sources.helpdesk.name,
            fetch=self.sources.helpdesk.tickets,
            codec=_ticket,
            tags=lambda _id, t: [f"helpdesk:{t.requester_id}", f"ticket:{t.id}"],
        )

    @cached_property
    def helpdesk_link(self) -> EntityLoader[EmailOf, str]:
        """(email, CRM id) -> the helpdesk id found by that email ("" where none was)."""
        return self._loader(
            kind="helpdesk",
            entity="link",
            source=self.sources.helpdesk.name,
            fetch=_no_account_kept(self.sources.helpdesk.requester_ids_by_email),
            codec=LINK_CODEC,
            cache_id=self._pseudonym,
            tags=_owner_tag,
        )

    @cached_property
    def file_page(self) -> EntityLoader[FileQuery, Page[StoredFile]]:
        return self._loader(
            kind="files",
            entity="files",
            source=self.sources.files.name,
            fetch=self.sources.files.file_pages,
            codec=_file_page,
            cache_id=_page_id,
            tags=lambda q, _p: [f"files:{q.customer_id}"],
        )

    @cached_property
    def file(self) -> EntityLoader[str, StoredFile]:
        return self._loader(
            kind="files",
            entity="file",
            source=self.sources.files.name,
            fetch=self.sources.files.files,
            codec=_file,
            tags=lambda _id, f: [f"files:{f.customer_id}", f"file:{f.id}"],
        )
