"""Structural limits (gateway/schema/limits.py) and the executor's document cache."""

from __future__ import annotations

import time

import pytest
from graphql import get_introspection_query, parse

from gateway.persisted import sha256
from gateway.schema import build_schema
from gateway.schema.execution import AST_BYTES_PER_CHAR, GraphQLExecutor
from gateway.schema.internals import graphql_schema
from gateway.schema.limits import DocumentLimits
from gateway.settings import Settings

LIMITS = DocumentLimits(
    max_depth=10, max_fields=1000, max_aliases=30, max_pairs=2000, max_directives=50
)
SCHEMA = graphql_schema(build_schema())


def refusals(query: str) -> list[str]:
    return [error.message for error in LIMITS.check(parse(query, max_tokens=100_000))]


def test_a_portal_page_is_within_every_limit() -> None:
    page = """query Home { me { id name email
      invoices(first: 10) { edges { node { id total status } } pageInfo { hasNextPage } }
      tickets(first: 10) { edges { node { ...T } } }
      files(first: 10) { edges { node { id name downloadUrl } } } } }
      fragment T on Ticket { id subject status updatedAt requester { id ...C } }
      fragment C on Customer { id name }"""
    assert refusals(page) == []


def test_fragment_fan_out_is_counted_expanded_in_linear_time() -> None:
    levels = 60  # 2**60 fields once expanded; measured once per fragment
    fragments = " ".join(
        f"fragment F{i} on Customer {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)
    )
    query = f"{{ me {{ ...F0 }} }} {fragments} fragment F{levels} on Customer {{ id }}"
    started = time.perf_counter()
    [message] = refusals(query)
    assert time.perf_counter() - started < 1
    assert message == f"{2**levels + 1} fields exceed 1000"


def test_an_unused_fragment_is_measured_too() -> None:
    fragments = " ".join(
        f"fragment F{i} on Customer {{ ...F{i + 1} ...F{i + 1} }}" for i in range(30)
    )
    assert refusals(f"{{ __typename }} {fragments} fragment F30 on Customer {{ id }}")


def test_a_long_chain_of_fragments_needs_no_recursion() -> None:
    chain = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(3000))
    assert refusals(f"{{ ...F0 }} {chain} fragment F3000 on Query {{ __typename }}") == []


def test_a_fragment_cycle_is_left_to_validation() -> None:
    assert (
        refusals("{ me { ...A } } fragment A on Customer { ...B } fragment B on Customer { ...A }")
        == []
    )


@pytest.mark.parametrize(
    ("query", "refused"),
    [
        ("{" + " me { id }" * 31 + " }", False),  # 2 x C(31, 2) = 930 pairs
        ("{" + " me { id }" * 46 + " }", True),  # 2 x C(46, 2) = 2,070
        (
            "{ me { "
            + " ".join(f"...F{i}" for i in range(64))
            + " } } "
            + " ".join(f"fragment F{i} on Customer {{ id }}" for i in range(64)),
            True,
        ),
        ("{ me { ... on Customer { id } ... on Customer { id } id } }", False),
    ],
)
def test_pairs_of_same_named_fields_are_bounded(query: str, refused: bool) -> None:
    messages = refusals(query)
    assert bool(messages) is refused
    if refused:
        assert "pairs of fields sharing a response name exceed 2000" in messages[0]


def test_nested_repeats_count_their_sub_fields_pairs() -> None:
    # 20 me of 20 distinct invoices each: few fields per level, 76,000 comparisons below
    tree = (
        "me { " + " ".join(f"invoices(first: {i + 1}) {{ totalCount }}" for i in range(20)) + " }"
    )
    [message] = refusals("{" + " ".join([tree] * 20) + " }")
    assert "pairs" in message


def test_aliases_and_directives_count() -> None:
    assert refusals("{" + " ".join(f"a{i}: __typename" for i in range(31)) + " }") == [
        "31 aliases exceed 30"
    ]
    assert refusals("{ me " + "@include(if: true) " * 51 + "{ id } }") == [
        "51 directives exceed 50"
    ]


def test_the_executor_keeps_valid_documents_only_within_its_byte_budget() -> None:
    executor = GraphQLExecutor.from_settings(SCHEMA, Settings(query_cache_max_bytes=2_000_000))
    refused = "{ me { nope } }"
    assert executor.prepare(sha256(refused), refused).errors
    assert sha256(refused) not in executor.prepared
    for n in range(200):
        query = f"{{ me {{ id name }} }} # {n:04d}" + " " * 1000
        assert not executor.prepare(sha256(query), query).errors
        assert executor.prepared.bytes <= 2_000_000
    # each was reckoned at its text's length times AST_BYTES_PER_CHAR
    assert len(executor.prepared) == 2_000_000 // ((len(query)) * AST_BYTES_PER_CHAR)


@pytest.mark.parametrize("options", [{}, {"descriptions": True, "input_value_deprecation": True}])
def test_graphiqls_introspection_query_is_within_every_limit(options: dict[str, bool]) -> None:
    # TypeRef nests `ofType` nine deep: depth counts only outside introspection fields
    assert refusals(get_introspection_query(**options)) == []


def test_a_fragment_defined_before_its_operation_counts_its_depth_there() -> None:
    fragment = (
        "fragment D on Customer "
        "{ invoices { edges { node { customer { invoices { edges { node { id } } } } } } } }"
    )  # 8 deep
    assert refusals(f"{fragment} {{ me {{ ...D }} }}") == []  # 9
    deeper = "{ me { invoices { edges { node { customer { ...D } } } } } }"  # 5 + 8
    assert refusals(f"{fragment} {deeper}") == ["query depth 13 exceeds 10"]
