"""One operation pipeline for every transport (HTTP at /graphql, graphql-transport-ws).

Each phase has a bound that is cheap to check before the next, more expensive one runs
(docs/design.md §1a):

  decode      the request is a JSON object of bounded bytes and nesting (REQUEST_MAX_BYTES,
              QUERY_MAX_VARIABLE_DEPTH); query, operationName, variables and extensions
              have their GraphQL-over-HTTP types
  document    the persisted-documents policy (PERSISTED_QUERIES) names the document
  authenticate  the caller's token or key; a failure counts against the caller's IP limit
  admit       the incoming limits per IP, viewer and service key (one Redis round trip,
              shared with the whole-response cache read on HTTP)
  prepare     the text, parsed under a token limit, structural limits (depth, fields,
              aliases, repeated fields, directives: one linear pass), validation, cost
              (representations of `_entities` included); kept per document digest in a
              cache bounded in bytes
  execute     graphql-core's executor

Every refusal is a RequestRefused carrying its HTTP status and GraphQL errors; HTTP
answers it with that status, WebSocket with an `error` message for the operation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from graphql import OperationType

from gateway.auth import Authenticator, Viewer
from gateway.cache.base import CacheBackend
from gateway.cache.incoming import IncomingLimits, Window, key_identity
from gateway.errors import GatewayError, RateLimited, RequestRefused
from gateway.observability import RATE_LIMITED_TOTAL
from gateway.persisted import Document, PersistedDocuments
from gateway.schema.execution import GraphQLExecutor, Prepared, operation_type

__all__ = ["Operation", "OperationPipeline", "Ready", "json_object", "nesting_depth"]


@dataclass(slots=True)
class Operation:
    """What a client asked for, decoded and within bounds."""

    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    extensions: dict[str, Any] | None


@dataclass(slots=True)
class Ready:
    """An operation that passed every phase but execution."""

    prepared: Prepared
    kind: OperationType


def nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists and objects nest in a decoded JSON value, counted up to `limit + 1`
    (no further: the answer only has to say "too deep"). Iterative, linear in the value."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        children = current.values() if type(current) is dict else current
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
    return deepest


class OperationPipeline:
    def __init__(
        self,
        executor: GraphQLExecutor,
        auth: Authenticator,
        documents: PersistedDocuments,
        backend: CacheBackend,
        limits: IncomingLimits | None,
        *,
        max_variable_depth: int,
    ) -> None:
        self.executor = executor
        self.auth = auth
        self.documents = documents
        self.backend = backend
        self.limits = limits
        self.max_variable_depth = max_variable_depth

    # -- decode -------------------------------------------------------------------------

    def operation(self, payload: Any) -> Operation:
        """The operation of a decoded request body or subscribe payload."""
        if not isinstance(payload, dict):
            raise RequestRefused(400, "the body must be a JSON object")
        query = payload.get("query") or ""  # may be absent for a persisted document
        if not isinstance(query, str):
            raise RequestRefused(400, "the body must carry a 'query' string")
        name = payload.get("operationName")
        if name is not None and not isinstance(name, str):
            raise RequestRefused(400, "operationName must be a string")
        extensions = payload.get("extensions")
        return self.checked(
            query,
            json_object(payload.get("variables"), "variables"),
            name or None,
            extensions if isinstance(extensions, dict) else None,
        )

    def checked(
        self,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        extensions: dict[str, Any] | None,
    ) -> Operation:
        """The operation, once its variables and extensions are known to nest shallowly
        (deep values crash JSON encoding and walk the stack in coercion)."""
        for name, value in (("variables", variables), ("extensions", extensions)):
            if value and nesting_depth(value, self.max_variable_depth) > self.max_variable_depth:
                raise RequestRefused(
                    400,
                    f"{name} nest deeper than {self.max_variable_depth} levels",
                    "BAD_USER_INPUT",
                    field=name,
                )
        return Operation(query, variables, operation_name, extensions)

    # -- document, caller -----------------------------------------------------------------

    def document(self, operation: Operation) -> Document:
        """The document the operation names, under the persisted-documents policy."""
        return self.documents.identify(operation.query, operation.extensions)

    async def authenticate(
        self, authorization: str | None, api_key: str | None, client_ip: str
    ) -> Viewer:
        """The caller. A failed authentication counts against the client IP's limit (and
        answers 429 once that is spent), so guessing keys or tokens costs the guesser."""
        try:
            return await self.auth.viewer(authorization, api_key)
        except GatewayError as error:
            failed = error
        if self.limits is not None:
            await self.admit(self.limits.windows([("ip", client_ip)]))
        raise RequestRefused.of(401, failed)

    def windows(self, viewer: Viewer, api_key: str | None, client_ip: str) -> list[Window]:
        """The incoming-limit counters this request counts against."""
        if self.limits is None:
            return []
        who = [("ip", client_ip)]
        if viewer.service:
            who.append(("service", key_identity(api_key or "")))
        elif viewer.authenticated:
            who.append(("viewer", viewer.scope if viewer.customer_id else f"sub:{viewer.subject}"))
        return self.limits.windows(who)

    async def admit(self, windows: Sequence[Window], cache_key: str | None = None) -> bytes | None:
        """Counts the request in its windows, reading `cache_key` in the same round trip;
        raises a 429 refusal when a window is spent, else answers the cached bytes."""
        if not windows and cache_key is None:
            return None
        counts, data = await self.backend.count_and_get(
            [(w.key, w.ttl) for w in windows], cache_key
        )
        retry_after = IncomingLimits.retry_after(windows, counts)
        if retry_after is not None:
            RATE_LIMITED_TOTAL.inc()
            limited = RateLimited(retry_after)
            raise RequestRefused(
                429,
                limited.message,
                limited.code,
                retry_after=max(1, math.ceil(retry_after)),
                **limited.extra,
            )
        return data

    # -- prepare --------------------------------------------------------------------------

    async def prepare(self, document: Document, operation: Operation) -> Ready:
        """Parse, structural limits, validation, the operation's kind and its cost."""
        text = await self.documents.text(document)
        prepared = self.executor.prepare(document.digest, text)
        if prepared.errors:
            raise RequestRefused(
                400, "the document was refused", "GRAPHQL_VALIDATION_FAILED", errors=prepared.errors
            )
        await self.documents.remember(document, text)
        kind = operation_type(prepared, operation.operation_name)
        if kind is None:
            raise RequestRefused(
                400,
                "operationName does not name an operation of the document",
                "GRAPHQL_VALIDATION_FAILED",
            )
        too_complex = self.executor.too_complex(
            prepared, operation.operation_name, operation.variables
        )
        if too_complex is not None:
            raise RequestRefused.of(400, too_complex)
        return Ready(prepared, kind)


def json_object(value: Any, name: str) -> dict[str, Any] | None:
    """`value` when it is a JSON object (or absent); a 400 refusal naming `name` else."""
    if value is None or isinstance(value, dict):
        return value
    raise RequestRefused(400, f"{name} must be a JSON object")
