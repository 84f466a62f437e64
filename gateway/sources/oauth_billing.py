"""What the accounting adapters (QuickBooks, Xero) share besides their provider.

Both read billing with an OAuth 2.0 grant (`gateway.upstream.oauth`) and neither can filter
or count a customer's invoices, so a customer's invoices are all read, up to a provider's
batch of customers a call, then filtered and paged here: a page's cursor is the offset in
that list, and status, first and after never change the provider call. Neither has
subscriptions. Query syntax, ids, limits, headers, error details and the parsing of each
provider's JSON stay in its own module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import msgspec
from pydantic import SecretStr

from gateway.domain import Invoice, InvoiceQuery, Page, Subscription
from gateway.errors import BadUserInput, IntegrationUnavailable
from gateway.redis_client import RedisClient
from gateway.settings import Settings
from gateway.sources.fanout import batched, chunks, each
from gateway.sources.sandbox import paginate
from gateway.upstream import BreakerState, UpstreamClient
from gateway.upstream.oauth import OAuthCredentials, OAuthTokens, TokenState

__all__ = ["OAuthBilling", "UnreadableInvoice", "amount", "oauth_credentials"]


class UnreadableInvoice(Exception):
    """A provider's invoice without a field the gateway needs."""


def oauth_credentials(
    source: str,
    *,
    client_id: str | None,
    client_secret: SecretStr | None,
    account: tuple[str, str | None],
    token_url: str,
    refresh_token: SecretStr | None,
) -> tuple[OAuthCredentials, str]:
    """The OAuth app of BILLING_SOURCE=`source` and the account it reads (`account` is the
    variable naming it and its value); ValueError naming every variable that is missing."""
    variable, account_id = account
    prefix = source.upper()
    if not client_id or client_secret is None or not account_id:
        missing = [
            name
            for name, value in (
                (f"{prefix}_CLIENT_ID", client_id),
                (f"{prefix}_CLIENT_SECRET", client_secret),
                (variable, account_id),
            )
            if not value
        ]
        raise ValueError(f"BILLING_SOURCE={source} needs {', '.join(missing)}")
    credentials = OAuthCredentials(
        provider=source,
        token_url=token_url,
        client_id=client_id,
        client_secret=client_secret,
        refresh_token=refresh_token,
        refresh_token_variable=f"{prefix}_REFRESH_TOKEN",
    )
    return credentials, account_id


class OAuthBilling(ABC):
    """The provider-independent half of a BillingSource on an accounting API.

    A subclass names its provider and supplies its limits, its calls (handed to
    `_pages_from` and `_invoices_from`), the look-up of a billing id by email, and what an
    error answer of its provider says.
    """

    name: str
    pages_carry_totals = True  # a customer's invoices are read whole, paged here
    _log: ClassVar[logging.Logger]  # the adapter module's logger, named in every record
    _ids_per_call: ClassVar[int]  # customers (or invoice ids) a provider call
    _id: ClassVar[re.Pattern[str]]  # the provider's ids; anything else is not one
    _forbidden: ClassVar[str]  # the message of a 403: which account the app cannot read

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient | None,
        client: UpstreamClient,
        credentials: OAuthCredentials,
        *,
        concurrency: int,
    ) -> None:
        """`redis` shares the OAuth grant with every replica; `concurrency` is the
        provider's limit of calls at once (per replica)."""
        self._client = client
        self._tokens = OAuthTokens(credentials, settings=settings, redis=redis)
        self._slots = asyncio.Semaphore(concurrency)

    @property
    def breaker_state(self) -> BreakerState:
        return self._client.breaker_state

    @property
    def auth_state(self) -> TokenState:
        """The OAuth grant: "ok", or why billing cannot be read ("revoked", ...)."""
        return self._tokens.state

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._tokens.aclose()

    @abstractmethod
    async def invoice_pages(
        self, queries: Sequence[InvoiceQuery]
    ) -> list[Page[Invoice] | Exception]: ...

    async def invoice_pages_indexed(
        self, queries: Sequence[InvoiceQuery]
    ) -> list[Page[Invoice] | Exception]:
        """A view of many customers: the same batched reads as one customer's (many
        customers a call already, and no search index to lag behind)."""
        return await self.invoice_pages(queries)

    async def invoice_counts(self, queries: Sequence[InvoiceQuery]) -> list[int | Exception | None]:
        """Every page already carries its customer's total (invoices are read whole); this
        answers it for a first page of one invoice, should a caller ask."""
        firsts = [msgspec.structs.replace(q, first=1, after=None) for q in queries]
        return [
            p.total_count if isinstance(p, Page) else p for p in await self.invoice_pages(firsts)
        ]

    async def subscriptions(
        self, billing_ids: Sequence[str]
    ) -> list[list[Subscription] | Exception]:
        """Accounting providers have no subscriptions (recurring invoices are templates of
        invoices): [] for everyone, without a call."""
        return [[] for _ in billing_ids]

    async def billing_ids_by_email(self, emails: Sequence[str]) -> list[str | Exception | None]:
        unique = list(dict.fromkeys(emails))
        found = await each(unique, self._billing_id_of)
        by_email = dict(zip(unique, found, strict=True))
        return [by_email[email] for email in emails]

    @abstractmethod
    async def _billing_id_of(self, email: str) -> str | None:
        """The provider's customer of `email`, None when it has none."""

    @abstractmethod
    def _fault(self, body: Any) -> dict[str, Any]:
        """What an error answer says that is safe to log: codes and types, no messages
        (they can quote the request's values)."""

    async def _pages_from(
        self,
        queries: Sequence[InvoiceQuery],
        fetch: Callable[[list[str]], Awaitable[Mapping[str, list[Invoice]]]],
    ) -> list[Page[Invoice] | Exception]:
        """One page per query out of every invoice of its customer: `fetch` reads a batch
        of customers' invoices, newest first per customer, keyed by the customer id as
        queried."""
        customers = list(
            dict.fromkeys(q.billing_id for q in queries if self._id.match(q.billing_id))
        )
        found = await batched(customers, self._ids_per_call, fetch)
        return [_page(query, found.get(query.billing_id, [])) for query in queries]

    async def _invoices_from(
        self,
        ids: Sequence[str],
        fetch: Callable[[list[str]], Awaitable[Mapping[str, Invoice]]],
    ) -> list[Invoice | Exception | None]:
        """Invoices by id: `fetch` reads a batch of ids and keys what it found by the id in
        lower case (Xero's UUIDs compare case-insensitively)."""
        wanted = list(dict.fromkeys(i for i in ids if self._id.match(i)))
        batches = chunks(wanted, self._ids_per_call)
        found = await each(batches, fetch)
        by_id: dict[str, Invoice | Exception] = {}
        for batch, result in zip(batches, found, strict=True):
            for invoice_id in batch:
                if isinstance(result, Exception):
                    by_id[invoice_id] = result
                elif invoice_id.lower() in result:
                    by_id[invoice_id] = result[invoice_id.lower()]
        return [by_id.get(i) for i in ids]

    def _readable(
        self,
        rows: Iterable[dict[str, Any]],
        parse: Callable[[Mapping[str, Any]], Invoice],
        id_field: str,
    ) -> Iterator[tuple[dict[str, Any], Invoice]]:
        """Each row `parse` can read, with its invoice; the others are logged and skipped."""
        for row in rows:
            try:
                invoice = parse(row)
            except UnreadableInvoice as exc:
                # One odd record must not cost every customer of the batch their invoices.
                self._log.warning(
                    "%s: skipped an invoice: %s",
                    self.name,
                    exc,
                    extra={"provider": self.name, "object_id": row.get(id_field)},
                )
                continue
            yield row, invoice

    async def _read(self, path: str, params: Mapping[str, Any], operation: str) -> Any:
        """One GET with the grant's access token, within the provider's concurrency: the
        JSON it answers (numbers as Decimal; None when it is not JSON)."""
        async with self._slots:
            response = await self._tokens.request(
                self._client, "GET", path, operation=operation, params=params
            )
        body = _json(response.content)
        if response.status_code != 200:
            raise self._refused(response.status_code, body, operation)
        return body

    def _refused(self, status: int, body: Any, operation: str) -> IntegrationUnavailable:
        """The error for an answer other than 200 (the client raised for 5xx and 429)."""
        self._log.error(
            "%s %s refused: HTTP %s",
            self.name,
            operation,
            status,
            extra={
                "provider": self.name,
                "operation": operation,
                "status": status,
                **self._fault(body),
            },
        )
        if status == 403:
            message = self._forbidden
        else:
            message = f"{self.name} refused the gateway's request (HTTP {status})"
        return IntegrationUnavailable(self.name, message, retryable=False)


def _json(content: bytes) -> Any:
    # Decimal, so an amount is exactly what the provider sent.
    try:
        return json.loads(content, parse_float=Decimal)
    except ValueError:
        return None


def _page(query: InvoiceQuery, invoices: list[Invoice] | Exception) -> Page[Invoice] | Exception:
    if isinstance(invoices, Exception):
        return invoices
    if query.after is not None and not query.after.isdigit():
        return BadUserInput("after must be a cursor from a previous page", "after")
    if query.status is not None:
        invoices = [i for i in invoices if i.status is query.status]
    return paginate(invoices, query.first, query.after)


def amount(row: Mapping[str, Any], key: str) -> Decimal:
    """`row[key]` (0 when absent) as a finite Decimal; UnreadableInvoice otherwise."""
    value = row.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise UnreadableInvoice(f"'{key}' is not a number")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise UnreadableInvoice(f"'{key}' is not a number") from None
    if not number.is_finite():
        raise UnreadableInvoice(f"'{key}' is not a number")
    return number
