"""Every private name of strawberry and graphql-core the gateway uses, and only here.

The gateway drives graphql-core directly with the schema strawberry builds (its own parse,
validation cache and limits, docs/design.md 1a) and completes plain fields without their
resolvers (design 12). Neither library offers a public way to do that; these are the
names it takes instead, each with why. pyproject.toml pins the versions they were written
for, and tests/schema/test_internals.py checks that each exists and behaves as assumed,
naming the library and the name when one does not: upgrade only with that test green.

strawberry-graphql
- `Schema._schema`, through `graphql_schema`: the graphql-core schema strawberry built
  and executes with. strawberry has no public accessor for it.
- `Info._raw_info`, through `resolve_info`: graphql-core's resolve info behind
  strawberry's. `me` prefetches the files page its selection will ask for
  (gateway/schema/prefetch.py) with the field nodes, fragments, variables and return type,
  coercing arguments as the executor will; strawberry's public `Info.selected_fields`
  gives arguments as written (an Int as the string "10", no defaults).
- the field extension `GraphQLCoreConverter.DEFINITION_BACKREF` ("strawberry-definition"),
  through `plain_attribute`: the StrawberryField behind a graphql-core field, for the
  Python attribute it reads. Whether the field has a resolver of its own is asked through
  strawberry's public `strawberry.resolvers.is_default_resolver`.
- `wrapped_cls` of strawberry's enum types, through `enum_members`: the Python enum, so
  a name table is made once (strawberry's output coercion scans the values each time).

graphql-core
- `IncrementalExecutor` (graphql.execution.incremental, "for internal use only"): the
  executor `execute` builds when given no `executor_class`. `PlainFieldsExecutor`
  subclasses it so that everything but plain fields runs exactly as it would without it.
- `Executor.execute_fields` and `Executor.execute_field` (documented `:meta private:`),
  overridden by `PlainFieldsExecutor`: where an object's fields and one field are
  executed, the only places a short path for plain fields can go.
- `FieldDetailsList`, `GroupedFieldSet` (graphql.execution.collect_fields): the types of
  those two methods' arguments.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

from graphql import GraphQLField, GraphQLObjectType, GraphQLResolveInfo, GraphQLSchema, Undefined
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.execution.incremental import IncrementalExecutor
from graphql.pyutils import Path
from strawberry.resolvers import is_default_resolver
from strawberry.schema.schema_converter import GraphQLCoreConverter

if TYPE_CHECKING:
    import strawberry
    from strawberry.types import Info

__all__ = [
    "IncrementalExecutor",
    "PlainFieldsExecutor",
    "enum_members",
    "graphql_schema",
    "plain_attribute",
    "resolve_info",
]


def graphql_schema(schema: strawberry.Schema) -> GraphQLSchema:
    """The graphql-core schema strawberry built for `schema` (strawberry's `_schema`)."""
    built: GraphQLSchema = schema._schema
    return built


def resolve_info(info: Info[Any, Any]) -> GraphQLResolveInfo[Any]:
    """graphql-core's resolve info behind strawberry's `info` (strawberry's `_raw_info`)."""
    return info._raw_info


def plain_attribute(field: GraphQLField) -> str | None:
    """The Python attribute a strawberry field reads when it has no resolver of its own;
    None for a field with a resolver, or one strawberry did not make."""
    definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if definition is None or field.resolve is None or not is_default_resolver(field.resolve):
        return None
    name: str = definition.python_name
    return name


def enum_members(leaf: Any) -> type[Enum] | None:
    """The Python enum behind a strawberry enum type (its `wrapped_cls`), else None."""
    members = getattr(leaf, "wrapped_cls", None)
    return members if isinstance(members, type) and issubclass(members, Enum) else None


# A plain field: one read attribute, then the scalar's or enum's output coercion; and
# whether null is a value it may have.
Plain = tuple[str, Any, bool]


class PlainFieldsExecutor(IncrementalExecutor):
    """graphql-core's executor with a short path for plain fields (see
    gateway.schema.execution.plain_fields, which fills `plain`).

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

    plain: dict[GraphQLObjectType, dict[str, Plain]] = {}

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
            selected: list[tuple[str, Plain]] = []
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


def _plain_value(source: Any, plain: Plain) -> Any:
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


def _complete_plain(source: Any, selected: list[tuple[str, Plain]]) -> dict[str, Any] | None:
    """The object's plain fields as graphql-core would complete them, or None when one of
    them needs the general path."""
    results: dict[str, Any] = {}
    for response_name, plain in selected:
        value = _plain_value(source, plain)
        if value is _GENERAL:
            return None
        results[response_name] = value
    return results
