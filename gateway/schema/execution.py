"""GraphQL over HTTP: parse and validate once per document (cached), execute, shape errors.

graphql-core is driven directly with the strawberry-built schema, which keeps the hot path
short: a warm document skips parsing and validation altogether.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson
from graphql import (
    ASTValidationRule,
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Undefined,
    execute,
    get_operation_ast,
    parse,
    specified_rules,
    validate,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.execution.incremental.incremental_executor import IncrementalExecutor
from graphql.pyutils import Path
from graphql.pyutils import is_awaitable as graphql_is_awaitable
from graphql.validation import NoSchemaIntrospectionCustomRule

from gateway.context import Context
from gateway.errors import GatewayError, QueryTooComplex
from gateway.schema.cost import query_cost

__all__ = ["GraphQLExecutor", "Prepared"]

log = logging.getLogger(__name__)

MAX_QUERY_BYTES = 100_000
_COSTS_KEPT = 64  # costs remembered per document (one per operation and variables)
_SUGGESTION = re.compile(r" Did you mean .*\?$")


def _depth(
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    seen: frozenset[str] = frozenset(),
) -> int:
    """Nested selection-set depth; introspection fields are not counted."""
    if selection_set is None:
        return 0
    deepest = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value.startswith("__"):
                continue
            deepest = max(deepest, 1 + _depth(selection.selection_set, fragments, seen))
        elif isinstance(selection, InlineFragmentNode):
            deepest = max(deepest, _depth(selection.selection_set, fragments, seen))
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:
                deepest = max(deepest, _depth(fragment.selection_set, fragments, seen | {name}))
    return deepest


def limits_rule(max_depth: int, max_aliases: int) -> type[ASTValidationRule]:
    """A validation rule refusing documents deeper or with more aliases than allowed."""

    class QueryLimits(ASTValidationRule):
        def enter_document(self, node: DocumentNode, *_args: Any) -> None:
            fragments = {
                d.name.value: d for d in node.definitions if isinstance(d, FragmentDefinitionNode)
            }
            for definition in node.definitions:
                if isinstance(definition, OperationDefinitionNode):
                    depth = _depth(definition.selection_set, fragments)
                    if depth > max_depth:
                        self.report_error(
                            _too_complex(
                                f"query depth {depth} exceeds {max_depth}", max_depth, depth
                            )
                        )
            aliases = _count_aliases(node)
            if aliases > max_aliases:
                self.report_error(
                    _too_complex(f"{aliases} aliases exceed {max_aliases}", max_aliases, aliases)
                )

    return QueryLimits


def _count_aliases(node: Any) -> int:
    count = 0
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, FieldNode) and current.alias is not None:
            count += 1
        for key in current.keys:
            value = getattr(current, key, None)
            if isinstance(value, tuple | list):
                stack.extend(v for v in value if hasattr(v, "keys"))
            elif hasattr(value, "keys") and not isinstance(value, str | dict):
                stack.append(value)
    return count


def _too_complex(message: str, limit: int, actual: int) -> GraphQLError:
    error = QueryTooComplex(message, limit=limit, actual=actual)
    return GraphQLError(message, extensions=error.extensions)


# A plain field: one read attribute, then the scalar's or enum's output coercion; and
# whether null is a value it may have.
_Plain = tuple[str, Any, bool]


def plain_fields(schema: GraphQLSchema) -> dict[GraphQLObjectType, dict[str, _Plain]]:
    """Per object type, the fields that are a plain attribute of their source: strawberry
    fields without resolver, arguments or extensions (strawberry marks their resolver
    `_is_default`) whose type is a scalar or an enum. Each maps to (attribute, coercion)."""
    table: dict[GraphQLObjectType, dict[str, _Plain]] = {}
    for named in schema.type_map.values():
        if not isinstance(named, GraphQLObjectType) or named.name.startswith("__"):
            continue
        fields: dict[str, _Plain] = {}
        for name, field in named.fields.items():
            definition = (field.extensions or {}).get("strawberry-definition")
            leaf = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
            if (
                definition is None
                or field.args
                or not getattr(field.resolve, "_is_default", False)
                or not isinstance(leaf, GraphQLScalarType | GraphQLEnumType)
            ):
                continue
            nullable = not isinstance(field.type, GraphQLNonNull)
            fields[name] = (definition.python_name, _output_coercion(leaf), nullable)
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
    members = getattr(leaf, "wrapped_cls", None)
    if not isinstance(leaf, GraphQLEnumType) or members is None:
        return coerce
    names = {member: coerce(member) for member in members}

    def by_name(value: Any) -> Any:
        try:
            return names[value]
        except (KeyError, TypeError):  # not a member (a raw value, say): the usual way
            return coerce(value)

    return by_name


class PlainFieldsExecutor(IncrementalExecutor):
    """graphql-core's executor with a short path for plain fields (see `plain_fields`).

    A portal page is mostly such leaves (ids, amounts, statuses, dates): the general path
    builds a resolve info, looks for arguments, calls strawberry's wrapper, checks for an
    awaitable and dispatches on the type for each of them. Here the value is read and
    coerced directly. Anything unusual (null where it may not be, a value the scalar
    refuses, an exception) goes through the general path, which makes the same error it
    always made.

    An object whose selected fields are all plain (an invoice or ticket node, pageInfo)
    is completed in one pass, without the response path, the awaitable check and the
    call per field that graphql-core's loop spends on each of them.
    """

    plain: dict[GraphQLObjectType, dict[str, _Plain]] = {}

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: Any,
    ) -> Any:
        fields = self.plain.get(parent_type)
        if fields is not None:
            selected: list[tuple[str, _Plain]] = []
            for response_name, details in grouped_field_set.items():
                plain = fields.get(details[0].node.name.value)
                if plain is None:
                    break
                selected.append((response_name, plain))
            else:
                results = _complete_plain(source_value, selected)
                if results is not None:
                    return results
        return super().execute_fields(
            parent_type, source_value, path, grouped_field_set, position_context
        )

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        fields = self.plain.get(parent_type)
        if fields is not None:
            plain = fields.get(field_details_list[0].node.name.value)
            if plain is not None:
                value = _plain_value(source, plain)
                if value is not _GENERAL:
                    return value
        return super().execute_field(
            parent_type, source, field_details_list, path, position_context
        )


# what _plain_value answers for a value the general path must complete (and report)
_GENERAL = object()


def _plain_value(source: Any, plain: _Plain) -> Any:
    """The plain field's value as graphql-core would complete it, or _GENERAL: a null where
    the field may not be null, a value the scalar refuses, or any exception."""
    attribute, coerce, nullable = plain
    try:
        value = getattr(source, attribute)
        if value is None:
            return None if nullable else _GENERAL
        coerced = coerce(value)
    except Exception:
        return _GENERAL
    return _GENERAL if coerced is None or coerced is Undefined else coerced


def _complete_plain(source: Any, selected: list[tuple[str, _Plain]]) -> dict[str, Any] | None:
    """The object's plain fields as graphql-core would complete them, or None when one of
    them needs the general path."""
    results: dict[str, Any] = {}
    for response_name, plain in selected:
        value = _plain_value(source, plain)
        if value is _GENERAL:
            return None
        results[response_name] = value
    return results


@dataclass(slots=True, frozen=True)
class Prepared:
    """A parsed and validated document, or the errors that refused it."""

    document: DocumentNode | None
    errors: list[dict[str, Any]]
    # query cost by (operation name, variables as sorted JSON), worked out once each
    costs: dict[tuple[str | None, bytes], int] = dataclasses.field(
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
    def __init__(
        self,
        schema: GraphQLSchema,
        *,
        max_depth: int,
        max_aliases: int,
        max_cost: int,
        introspection: bool,
        cache_size: int = 1024,
    ) -> None:
        self.schema = schema
        self.max_cost = max_cost
        rules: list[type[ASTValidationRule]] = [
            *specified_rules,
            limits_rule(max_depth, max_aliases),
        ]
        if not introspection:
            rules.append(NoSchemaIntrospectionCustomRule)
        self.rules = rules
        self.suggestions = introspection
        self._prepared: OrderedDict[str, Prepared] = OrderedDict()
        self._cache_size = cache_size
        self._executor_class = type(
            "SchemaPlainFieldsExecutor", (PlainFieldsExecutor,), {"plain": plain_fields(schema)}
        )

    def prepare(self, query: str) -> Prepared:
        """Parse and validate, remembering the outcome per document text."""
        prepared = self._prepared.get(query)
        if prepared is not None:
            self._prepared.move_to_end(query)
            return prepared
        prepared = self._prepare(query)
        self._prepared[query] = prepared
        if len(self._prepared) > self._cache_size:
            self._prepared.popitem(last=False)
        return prepared

    def _prepare(self, query: str) -> Prepared:
        if len(query) > MAX_QUERY_BYTES:
            return Prepared(None, [_error("query is too large", "BAD_USER_INPUT")])
        try:
            document = parse(query, max_tokens=20_000)
        except GraphQLError as error:
            return Prepared(None, [_graphql_error(error, "GRAPHQL_PARSE_FAILED")])
        errors = validate(self.schema, document, self.rules, max_errors=20)
        if errors:
            formatted = [_graphql_error(e, "GRAPHQL_VALIDATION_FAILED") for e in errors]
            if not self.suggestions:
                # "Did you mean ...?" would tell a stranger the schema introspection hides
                for entry in formatted:
                    entry["message"] = _SUGGESTION.sub("", entry["message"])
            return Prepared(None, formatted)
        return Prepared(document, [])

    def _cost(
        self,
        prepared: Prepared,
        operation: OperationDefinitionNode | None,
        operation_name: str | None,
        variables: dict[str, Any] | None,
    ) -> int:
        if operation is None:
            return 0
        key = (operation_name, orjson.dumps(variables, option=orjson.OPT_SORT_KEYS))
        cost = prepared.costs.get(key)
        if cost is None:
            cost = query_cost(self.schema, operation, prepared.fragments, variables)
            if len(prepared.costs) >= _COSTS_KEPT:
                prepared.costs.clear()  # variables that vary per request: keep it small
            prepared.costs[key] = cost
        return cost

    async def execute(
        self,
        prepared: Prepared,
        context: Context,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        report_cost: bool = False,
    ) -> dict[str, Any]:
        assert prepared.document is not None
        operation = prepared.operation(operation_name)
        cost = self._cost(prepared, operation, operation_name, variables)
        if cost > self.max_cost:
            error = QueryTooComplex(
                f"query cost {cost} exceeds {self.max_cost}", limit=self.max_cost, actual=cost
            )
            return {"errors": [{"message": error.message, "extensions": error.extensions}]}
        result = execute(
            self.schema,
            prepared.document,
            context_value=context,
            variable_values=variables,
            operation_name=operation_name,
            executor_class=self._executor_class,
            is_awaitable=_is_awaitable,
        )
        if not isinstance(result, ExecutionResult):
            result = await result
        response: dict[str, Any] = {}
        if result.errors:
            response["errors"] = [format_error(e, context.request_id) for e in result.errors]
        response["data"] = result.data
        extensions: dict[str, Any] = {}
        if context.stale:
            extensions["stale"] = context.stale
        if report_cost:
            extensions["cost"] = {"actual": cost, "limit": self.max_cost}
        if extensions:
            response["extensions"] = extensions
        return response


def operation_type(prepared: Prepared, operation_name: str | None) -> OperationType | None:
    operation = prepared.operation(operation_name)
    return operation.operation if operation else None


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
