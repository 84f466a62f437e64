"""GraphQL over HTTP: parse and validate once per document (cached), execute, shape errors.

graphql-core is driven directly with the strawberry-built schema, which keeps the hot path
short: a warm document skips parsing and validation altogether.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson
from graphql import (
    ASTValidationRule,
    DocumentNode,
    ExecutionResult,
    ExperimentalIncrementalExecutionResults,
    FragmentDefinitionNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    experimental_execute_incrementally,
    get_operation_ast,
    parse,
    specified_rules,
    validate,
)
from graphql.pyutils import is_awaitable as graphql_is_awaitable
from graphql.validation import NoSchemaIntrospectionCustomRule

from gateway.cache.bounded import BoundedLRU
from gateway.context import Context
from gateway.errors import GatewayError, QueryTooComplex
from gateway.schema.cost import OperationCost
from gateway.schema.incremental import IncrementalAnswer, WireFormat, soft_deferred
from gateway.schema.internals import Plain, PlainFieldsExecutor, enum_members, plain_attribute
from gateway.schema.limits import DocumentLimits
from gateway.settings import Settings

__all__ = ["GraphQLExecutor", "Prepared"]

log = logging.getLogger(__name__)

MAX_QUERY_BYTES = 100_000
_COSTS_KEPT = 64  # costs remembered per document (one per operation and variables)
# What a parsed and validated document is reckoned to hold per character of its text:
# graphql-core's AST measured 112-124 bytes a character (tracemalloc, 0.15 and 15 KB
# documents; docs/design.md 12), rounded up for the validated Prepared around it.
AST_BYTES_PER_CHAR = 160
_SUGGESTION = re.compile(r" Did you mean .*\?$")


def plain_fields(schema: GraphQLSchema) -> dict[GraphQLObjectType, dict[str, Plain]]:
    """Per object type, the fields that are a plain attribute of their source: strawberry
    fields without resolver, arguments or extensions whose type is a scalar or an enum.
    Each maps to (attribute, coercion, nullable)."""
    table: dict[GraphQLObjectType, dict[str, Plain]] = {}
    for named in schema.type_map.values():
        if not isinstance(named, GraphQLObjectType) or named.name.startswith("__"):
            continue
        fields: dict[str, Plain] = {}
        for name, field in named.fields.items():
            attribute = plain_attribute(field)
            leaf = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
            if (
                attribute is None
                or field.args
                or not isinstance(leaf, GraphQLScalarType | GraphQLEnumType)
            ):
                continue
            nullable = not isinstance(field.type, GraphQLNonNull)
            fields[name] = (attribute, _output_coercion(leaf), nullable)
        if fields:
            table[named] = fields
    return table


# Most field values are plain data: graphql-core asks each whether it is awaitable (a
# few hundred times a page), and its check tries isinstance twice and hasattr first.
_PLAIN_DATA = frozenset({str, int, float, bool, type(None), dict, list})


def _is_awaitable(value: Any) -> TypeGuard[Awaitable[Any]]:
    return type(value) not in _PLAIN_DATA and graphql_is_awaitable(value)


def _output_coercion(leaf: GraphQLScalarType | GraphQLEnumType) -> Any:
    """The leaf's output coercion; for a strawberry enum, its members' names looked up in a
    table made with that coercion (strawberry's own scans the enum's values each time)."""
    coerce = leaf.coerce_output_value
    members = enum_members(leaf)
    if not isinstance(leaf, GraphQLEnumType) or members is None:
        return coerce
    names = {member: coerce(member) for member in members}

    def by_name(value: Any) -> Any:
        try:
            return names[value]
        except (KeyError, TypeError):  # not a member (a raw value, say): the usual way
            return coerce(value)

    return by_name


@dataclass(slots=True, frozen=True)
class Prepared:
    """A parsed and validated document, or the errors that refused it."""

    document: DocumentNode | None
    errors: list[dict[str, Any]]
    # (cost, most representations) by (operation name, digest of the variables), worked
    # out once each
    costs: dict[tuple[str | None, bytes], tuple[int, int]] = dataclasses.field(
        default_factory=dict, compare=False
    )
    # the document with the fields of slow providers' kinds deferred (PROVIDER_SOFT_DEADLINES),
    # by (operation name, kinds)
    soft: dict[tuple[str | None, frozenset[str]], DocumentNode] = dataclasses.field(
        default_factory=dict, compare=False
    )

    @property
    def fragments(self) -> dict[str, FragmentDefinitionNode]:
        if self.document is None:
            return {}
        return {
            d.name.value: d
            for d in self.document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }

    def operation(self, name: str | None) -> OperationDefinitionNode | None:
        return get_operation_ast(self.document, name) if self.document else None


def format_error(error: GraphQLError, request_id: str) -> dict[str, Any]:
    """The error as the client sees it: known errors with their code, others masked."""
    original = error.original_error
    formatted: dict[str, Any] = {"message": error.message}
    if error.locations:
        formatted["locations"] = [
            {"line": loc.line, "column": loc.column} for loc in error.locations
        ]
    if error.path is not None:
        formatted["path"] = error.path
    if isinstance(original, GatewayError):
        formatted["message"] = original.message
        formatted["extensions"] = original.extensions
    elif original is not None and not isinstance(original, GraphQLError):
        log.error(
            "unexpected error in %s",
            ".".join(map(str, error.path or [])),
            exc_info=(type(original), original, original.__traceback__),
        )
        formatted["message"] = "Internal server error"
        formatted["extensions"] = {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    else:
        extensions = dict(error.extensions or {})
        extensions.setdefault("code", "BAD_USER_INPUT")
        formatted["extensions"] = extensions
    return formatted


class GraphQLExecutor:
    """Parses, bounds, validates and executes documents against one schema.

    The phases of docs/design.md §1a that need the schema: parse (token limit), structural
    limits (DocumentLimits, linear), validation, cost. A document that passes is kept,
    keyed by its sha256 digest, in a cache bounded in bytes; a refused one is not kept.
    """

    def __init__(
        self,
        schema: GraphQLSchema,
        *,
        limits: DocumentLimits,
        max_cost: int,
        max_tokens: int,
        max_representations: int,
        introspection: bool,
        cache_bytes: int = 50_000_000,
    ) -> None:
        self.schema = schema
        self.limits = limits
        self.max_cost = max_cost
        self.max_tokens = max_tokens
        self.max_representations = max_representations
        rules: list[type[ASTValidationRule]] = list(specified_rules)
        if not introspection:
            rules.append(NoSchemaIntrospectionCustomRule)
        self.rules = rules
        self.suggestions = introspection
        self.prepared: BoundedLRU[Prepared] = BoundedLRU(cache_bytes)
        self._executor_class = type(
            "SchemaPlainFieldsExecutor", (PlainFieldsExecutor,), {"plain": plain_fields(schema)}
        )

    @classmethod
    def from_settings(cls, schema: GraphQLSchema, settings: Settings) -> GraphQLExecutor:
        """The executor with the limits of QUERY_MAX_* and QUERY_CACHE_MAX_BYTES."""
        return cls(
            schema,
            limits=DocumentLimits(
                max_depth=settings.query_max_depth,
                max_fields=settings.query_max_fields,
                max_aliases=settings.query_max_aliases,
                max_pairs=settings.query_max_field_pairs,
                max_directives=settings.query_max_directives,
            ),
            max_cost=settings.query_max_cost,
            max_tokens=settings.query_max_tokens,
            max_representations=settings.query_max_representations,
            introspection=settings.introspection,
            cache_bytes=settings.query_cache_max_bytes,
        )

    def prepare(self, digest: str, query: str) -> Prepared:
        """Parse, bound and validate the document whose sha256 is `digest`, or take the
        outcome remembered for it."""
        prepared = self.prepared.get(digest)
        if prepared is not None:
            return prepared
        prepared = self._prepare(query)
        if not prepared.errors:
            self.prepared.put(digest, prepared, len(query) * AST_BYTES_PER_CHAR)
        return prepared

    def _prepare(self, query: str) -> Prepared:
        if len(query) > MAX_QUERY_BYTES:
            return Prepared(
                None, [_error(f"the query is over {MAX_QUERY_BYTES} bytes", "BAD_USER_INPUT")]
            )
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError as error:
            return Prepared(None, [_graphql_error(error, "GRAPHQL_PARSE_FAILED")])
        too_complex = self.limits.check(document)
        if too_complex:
            return Prepared(None, [_graphql_error(e, "QUERY_TOO_COMPLEX") for e in too_complex])
        errors = validate(self.schema, document, self.rules, max_errors=20)
        if errors:
            formatted = [_graphql_error(e, "GRAPHQL_VALIDATION_FAILED") for e in errors]
            if not self.suggestions:
                # "Did you mean ...?" would tell a stranger the schema introspection hides
                for entry in formatted:
                    entry["message"] = _SUGGESTION.sub("", entry["message"])
            return Prepared(None, formatted)
        return Prepared(document, [])

    def cost(
        self, prepared: Prepared, operation_name: str | None, variables: dict[str, Any] | None
    ) -> tuple[int, int]:
        """(cost, most representations of one `_entities`) of the named operation."""
        operation = prepared.operation(operation_name)
        if operation is None:
            return 0, 0
        key = (operation_name, _digest(variables))
        known = prepared.costs.get(key)
        if known is None:
            cost = OperationCost(self.schema, prepared.fragments, variables)
            known = (cost.operation(operation), cost.representations)
            if len(prepared.costs) >= _COSTS_KEPT:
                prepared.costs.clear()  # variables that vary per request: keep it small
            prepared.costs[key] = known
        return known

    def too_complex(
        self, prepared: Prepared, operation_name: str | None, variables: dict[str, Any] | None
    ) -> QueryTooComplex | None:
        """Why the operation may not run (its cost or its representations), or None."""
        cost, representations = self.cost(prepared, operation_name, variables)
        if representations > self.max_representations:
            return QueryTooComplex(
                f"{representations} representations exceed {self.max_representations}",
                limit=self.max_representations,
                actual=representations,
            )
        if cost > self.max_cost:
            return QueryTooComplex(
                f"query cost {cost} exceeds {self.max_cost}", limit=self.max_cost, actual=cost
            )
        return None

    async def execute(
        self,
        prepared: Prepared,
        context: Context,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        *,
        wire: WireFormat = WireFormat.DEFER_20220824,
        soft_deadlines: Mapping[str, float] | None = None,
        report_cost: bool = False,
    ) -> dict[str, Any] | IncrementalAnswer:
        """Runs a prepared operation the pipeline admitted (its cost already checked);
        answers the response, or its payloads in `wire` format when the operation defers
        or streams a part (or `soft_deadlines`, seconds per provider kind, deferred a field
        of a query whose provider is slow). `IncrementalAnswer.merge_all` makes those one
        response, for a client that asked for no incremental delivery."""
        assert prepared.document is not None
        document = prepared.document
        if soft_deadlines:
            document = self._soft_document(prepared, operation_name, frozenset(soft_deadlines))
        started = time.monotonic()
        # early execution: a deferred part's provider calls start with the initial part's
        result = experimental_execute_incrementally(
            self.schema,
            document,
            context_value=context,
            variable_values=variables,
            operation_name=operation_name,
            executor_class=self._executor_class,
            is_awaitable=_is_awaitable,
            enable_early_execution=True,
        )
        if not isinstance(result, ExecutionResult | ExperimentalIncrementalExecutionResults):
            result = await result
        extensions: dict[str, Any] = {}
        if report_cost:
            cost, _ = self.cost(prepared, operation_name, variables)
            extensions["cost"] = {"actual": cost, "limit": self.max_cost}
        if not isinstance(result, ExecutionResult):
            return IncrementalAnswer(
                result,
                wire,
                lambda error: format_error(error, context.request_id),
                context.stale,
                soft_deadlines=soft_deadlines,
                started=started,
                extensions=extensions,
            )
        response: dict[str, Any] = {}
        if result.errors:
            response["errors"] = [format_error(e, context.request_id) for e in result.errors]
        response["data"] = result.data
        if context.stale:
            extensions = {"stale": context.stale, **extensions}
        if extensions:
            response["extensions"] = extensions
        return response

    def _soft_document(
        self, prepared: Prepared, operation_name: str | None, kinds: frozenset[str]
    ) -> DocumentNode:
        """The prepared document with the fields of `kinds` deferred, for a query; made
        once per operation and kinds."""
        assert prepared.document is not None
        operation = prepared.operation(operation_name)
        if operation is None or operation.operation is not OperationType.QUERY:
            return prepared.document
        key = (operation_name, kinds)
        document = prepared.soft.get(key)
        if document is None:
            document = soft_deferred(self.schema, prepared.document, operation, set(kinds))
            prepared.soft[key] = document
        return document


def operation_type(prepared: Prepared, operation_name: str | None) -> OperationType | None:
    operation = prepared.operation(operation_name)
    return operation.operation if operation else None


def _digest(variables: dict[str, Any] | None) -> bytes:
    """Variables as a short key (sorted JSON, hashed: a large variable is not kept twice)."""
    dumped = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(dumped, digest_size=16).digest()


def _error(message: str, code: str) -> dict[str, Any]:
    return {"message": message, "extensions": {"code": code}}


def _graphql_error(error: GraphQLError, default_code: str) -> dict[str, Any]:
    formatted = _error(error.message, default_code)
    if error.extensions:
        formatted["extensions"] = {"code": default_code, **error.extensions}
    if error.locations:
        formatted["locations"] = [
            {"line": loc.line, "column": loc.column} for loc in error.locations
        ]
    return formatted
