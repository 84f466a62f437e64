"""The executor's short path for plain fields answers exactly what graphql-core would."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import pytest
import strawberry
from graphql import execute, parse

from gateway.schema import build_schema
from gateway.schema.execution import GraphQLExecutor, plain_fields
from gateway.schema.internals import PlainFieldsExecutor, graphql_schema
from gateway.settings import Settings


@strawberry.enum
class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Item:
    id: strawberry.ID
    name: str
    note: str | None
    colour: Colour
    at: datetime
    tags: list[str]

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()


class _Source:
    """Attributes as an adapter's domain object holds them (the name may be missing)."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item | None]:  # an error nulls one item, not the list
        return ITEMS  # type: ignore[return-value]


AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
GOOD = _Source(id="1", name="a", note=None, colour=Colour.RED, at=AT, tags=["x"])
ITEMS: list[Any] = []
QUERY = "{ items { id name note colour at tags shout } }"
# every field selected is plain: each item is completed in one pass
PLAIN_QUERY = "{ items { id name note colour at } }"
SCHEMA = graphql_schema(strawberry.Schema(query=Query))


def run(executor: type | None, query: str = QUERY) -> dict[str, Any]:
    result = execute(SCHEMA, parse(query), executor_class=executor)
    assert not hasattr(result, "__await__")
    return result.formatted  # type: ignore[union-attr]


def fast() -> type:
    return GraphQLExecutor.from_settings(SCHEMA, Settings())._executor_class


def test_plain_fields_are_the_leaves_without_resolver() -> None:
    item = SCHEMA.type_map["Item"]
    table = plain_fields(SCHEMA)[item]  # type: ignore[index]
    # a list, a resolver, and the root's resolver field are not plain
    assert sorted(table) == ["at", "colour", "id", "name", "note"]
    assert table["note"][0] == "note"


def test_the_same_answer_as_graphql_core() -> None:
    ITEMS[:] = [
        GOOD,
        _Source(id="2", name="b", note="n", colour=Colour.BLUE, at=AT, tags=[]),
        _Source(id="3", name="c", note=None, colour="blue", at=AT, tags=[]),  # a raw value
    ]
    answer = run(fast())
    assert answer == run(None)
    assert [item["colour"] for item in answer["data"]["items"]] == ["RED", "BLUE", "BLUE"]
    assert answer["data"]["items"][0] == {
        "id": "1",
        "name": "a",
        "note": None,
        "colour": "RED",
        "at": "2026-01-05T09:00:00+00:00",
        "tags": ["x"],
        "shout": "A",
    }


@pytest.mark.parametrize("query", [QUERY, PLAIN_QUERY], ids=["per-field", "one-pass"])
def test_errors_are_graphql_cores_own(query: str) -> None:
    # null for a non-null field, a value the enum refuses, a missing attribute
    ITEMS[:] = [
        GOOD,
        _Source(id="2", name=None, note=None, colour=Colour.RED, at=AT, tags=[]),
        _Source(id="3", name="c", note=None, colour="green", at=AT, tags=[]),
        _Source(name="d", note=None, colour=Colour.RED, at=AT, tags=[]),
    ]
    answer = run(fast(), query)
    assert answer == run(None, query)
    paths = sorted(tuple(error["path"]) for error in answer["errors"])
    assert paths == [("items", 1, "name"), ("items", 2, "colour"), ("items", 3, "id")]
    assert answer["data"]["items"][0]["note"] is None  # a nullable null stays a value


def test_the_gateway_schema_has_plain_fields_on_its_page_types() -> None:
    table = {t.name: set(f) for t, f in plain_fields(graphql_schema(build_schema())).items()}
    assert {"id", "status", "total", "currency"} <= table["Invoice"]
    assert {"id", "subject", "status"} <= table["Ticket"]
    assert issubclass(fast(), PlainFieldsExecutor)


def test_an_object_of_plain_fields_only_is_completed_in_one_pass() -> None:
    ITEMS[:] = [GOOD, _Source(id="2", name="b", note="n", colour="blue", at=AT, tags=[])]
    asked: list[str] = []

    class Counting(fast()):  # type: ignore[misc]
        def execute_field(self, parent_type: Any, *args: Any) -> Any:
            asked.append(parent_type.name)
            return super().execute_field(parent_type, *args)

    answer = run(Counting, PLAIN_QUERY)
    assert answer == run(None, PLAIN_QUERY)
    assert answer["data"]["items"][1] == {
        "id": "2",
        "name": "b",
        "note": "n",
        "colour": "BLUE",
        "at": "2026-01-05T09:00:00+00:00",
    }
    assert asked == ["Query"]  # no item field went through graphql-core's field path
