"""The private names of gateway/schema/internals.py, on the installed strawberry and
graphql-core: each exists and behaves as the gateway assumes. A failure names the library,
its version and the name, so an upgrade that breaks one says which."""

from __future__ import annotations

import enum
import importlib
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any

import graphql
import pytest
import strawberry
from graphql import (
    GraphQLField,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLString,
    parse,
)
from graphql.execution import get_argument_values

STRAWBERRY = "strawberry-graphql"
GRAPHQL_CORE = "graphql-core"
# The seam is imported inside each test: a name it lacks fails the tests that need it,
# each saying which, rather than the whole file at collection.


@contextmanager
def relied_on(library: str, name: str) -> Iterator[None]:
    """Turns any failure inside into one that names what the gateway relies on."""
    try:
        yield
    except Exception as exc:
        pytest.fail(
            f"{library} {version(library)}: {name} is not what gateway/schema/internals.py "
            f"relies on ({type(exc).__name__}: {exc}); adapt the seam before upgrading",
            pytrace=False,
        )


def test_the_seam_imports() -> None:
    """Each import of the seam, one at a time, so a missing one names itself."""
    for library, module, name in [
        (GRAPHQL_CORE, "graphql.execution.incremental", "IncrementalExecutor"),
        (GRAPHQL_CORE, "graphql.execution.collect_fields", "FieldDetailsList"),
        (GRAPHQL_CORE, "graphql.execution.collect_fields", "GroupedFieldSet"),
        (STRAWBERRY, "strawberry.schema.schema_converter", "GraphQLCoreConverter"),
        (STRAWBERRY, "strawberry.resolvers", "is_default_resolver"),
    ]:
        with relied_on(library, f"{module}.{name}"):
            assert hasattr(importlib.import_module(module), name), "missing"
    with relied_on(STRAWBERRY, "GraphQLCoreConverter.DEFINITION_BACKREF"):
        from strawberry.schema.schema_converter import GraphQLCoreConverter

        assert GraphQLCoreConverter.DEFINITION_BACKREF == "strawberry-definition"
    importlib.import_module("gateway.schema.internals")


# -- strawberry -------------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"


seen_infos: list[Any] = []


@strawberry.type
class Row:
    created_at: str  # plain: no resolver, a Python name that is not the GraphQL name
    colour: strawberry.enum(Colour)  # type: ignore[valid-type]

    @strawberry.field
    def shout(self) -> str:  # a resolver of its own
        return self.created_at.upper()


@strawberry.type
class Query:
    @strawberry.field
    def rows(self, info: strawberry.Info, first: int = 3) -> list[Row]:
        seen_infos.append(info)
        return [Row(created_at="today", colour=Colour.RED)]


SCHEMA = strawberry.Schema(query=Query)


def test_strawberry_schema_has_the_graphql_core_schema_it_executes_with() -> None:
    from gateway.schema.internals import graphql_schema

    with relied_on(STRAWBERRY, "Schema._schema"):
        built = graphql_schema(SCHEMA)
        assert isinstance(built, GraphQLSchema)
        assert graphql_schema(SCHEMA) is built
        assert isinstance(built.type_map["Row"], GraphQLObjectType)
    answer = graphql.execute_sync(built, parse("{ rows { createdAt } }"))
    assert answer.errors is None
    assert answer.data == {"rows": [{"createdAt": "today"}]}


def test_strawberry_info_wraps_graphql_cores_resolve_info() -> None:
    """As the gateway runs it: graphql-core's executor on strawberry's schema."""
    from gateway.schema.internals import graphql_schema, resolve_info

    seen_infos.clear()
    document = parse("query Q($n: Int!) { rows(first: $n) { createdAt } }")
    graphql.execute_sync(graphql_schema(SCHEMA), document, variable_values={"n": 2})
    [info] = seen_infos
    with relied_on(STRAWBERRY, "Info._raw_info"):
        raw = resolve_info(info)
        assert isinstance(raw, GraphQLResolveInfo)
        assert raw.field_name == "rows"
        assert raw.parent_type.name == "Query"
        # what gateway/schema/prefetch.py reads: nodes, return type, fragments, variables
        [node] = raw.field_nodes
        assert graphql.get_named_type(raw.return_type).name == "Row"  # type: ignore[union-attr]
        assert raw.fragments == {}
        definition = raw.parent_type.fields["rows"]
        assert get_argument_values(definition, node, raw.variable_values) == {"first": 2}


def test_strawberry_fields_say_which_python_attribute_they_read() -> None:
    from gateway.schema.internals import graphql_schema, plain_attribute

    row = graphql_schema(SCHEMA).type_map["Row"]
    assert isinstance(row, GraphQLObjectType)
    with relied_on(STRAWBERRY, "the 'strawberry-definition' field extension"):
        assert plain_attribute(row.fields["createdAt"]) == "created_at"
        assert plain_attribute(row.fields["colour"]) == "colour"
    with relied_on(STRAWBERRY, "strawberry.resolvers.is_default_resolver (its _is_default)"):
        assert plain_attribute(row.fields["shout"]) is None
        # a field strawberry did not make is never taken for a plain attribute
        assert plain_attribute(GraphQLField(GraphQLString)) is None


def test_strawberry_enum_types_carry_their_python_enum() -> None:
    from gateway.schema.internals import enum_members, graphql_schema

    with relied_on(STRAWBERRY, "wrapped_cls of its GraphQLEnumType"):
        colour = graphql_schema(SCHEMA).type_map["Colour"]
        assert enum_members(colour) is Colour
        assert colour.coerce_output_value(Colour.RED) == "RED"  # type: ignore[attr-defined]
    assert enum_members(GraphQLString) is None


# -- graphql-core -----------------------------------------------------------------------

CORE_SCHEMA = graphql.build_schema("type Query { a: String, b: B } type B { c: String }")
ROOT = {"a": "x", "b": {"c": "y"}}


def test_execute_builds_an_incremental_executor_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """PlainFieldsExecutor subclasses the class `execute` uses when given none, so all but
    plain fields runs as it would without the gateway's executor."""
    from gateway.schema.internals import IncrementalExecutor

    built: list[type] = []
    build = IncrementalExecutor.build.__func__  # type: ignore[attr-defined]

    def recording(cls: type, *args: Any, **kwargs: Any) -> Any:
        built.append(cls)
        return build(cls, *args, **kwargs)

    monkeypatch.setattr(IncrementalExecutor, "build", classmethod(recording))
    with relied_on(GRAPHQL_CORE, "IncrementalExecutor as execute()'s default executor_class"):
        answer = graphql.execute(CORE_SCHEMA, parse("{ a }"), ROOT)
        assert built == [IncrementalExecutor]
        assert answer == graphql.ExecutionResult({"a": "x"}, None)  # type: ignore[comparison-overlap]


HOOKS = {
    "execute_fields": "parent_type source_value path grouped_field_set position_context",
    "execute_field": "parent_type source field_details_list path position_context",
}


@pytest.mark.parametrize("method", sorted(HOOKS))
def test_the_executor_hooks_take_what_the_override_passes(method: str) -> None:
    from gateway.schema.internals import IncrementalExecutor

    expected = ["self", *HOOKS[method].split()]
    with relied_on(GRAPHQL_CORE, f"Executor.{method}({', '.join(expected)})"):
        hook = getattr(IncrementalExecutor, method)
        assert list(inspect.signature(hook).parameters) == expected


def test_the_executor_runs_each_object_and_field_through_the_hooks() -> None:
    """An object's fields go through execute_fields with its grouped field set, and each
    field through execute_field with its details: what PlainFieldsExecutor overrides."""
    from gateway.schema.internals import IncrementalExecutor

    calls: list[tuple[str, Any]] = []

    class Watching(IncrementalExecutor):
        def execute_fields(
            self, parent_type: Any, source: Any, path: Any, fields: Any, position: Any
        ) -> Any:
            calls.append(("fields", (parent_type.name, sorted(fields))))
            return super().execute_fields(parent_type, source, path, fields, position)

        def execute_field(
            self, parent_type: Any, source: Any, details: Any, path: Any, position: Any
        ) -> Any:
            calls.append(("field", (parent_type.name, details[0].node.name.value)))
            return super().execute_field(parent_type, source, details, path, position)

    with relied_on(GRAPHQL_CORE, "Executor.execute_fields / Executor.execute_field as hooks"):
        answer = graphql.execute(CORE_SCHEMA, parse("{ a b { c } }"), ROOT, executor_class=Watching)
        assert answer == graphql.ExecutionResult({"a": "x", "b": {"c": "y"}}, None)  # type: ignore[comparison-overlap]
        assert ("field", ("Query", "a")) in calls
        assert ("fields", ("B", ["c"])) in calls
        assert ("field", ("B", "c")) in calls
