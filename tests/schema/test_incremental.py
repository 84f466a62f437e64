"""gateway/schema/incremental.py on a small schema of its own: the wire formats, merged
answers, parts failing whole, the soft-deadline rewrite; and what it relies on from
graphql-core and strawberry (experimental, public), each failure naming the library."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from graphql import (
    DocumentNode,
    ExperimentalIncrementalExecutionResults,
    GraphQLDeferDirective,
    GraphQLError,
    GraphQLStreamDirective,
    build_schema,
    experimental_execute_incrementally,
    parse,
    print_ast,
    specified_directives,
)
from strawberry.http.streaming import MultipartTransport

from gateway.graphql_http import incremental_wire
from gateway.schema.incremental import IncrementalAnswer, WireFormat, soft_deferred
from tests.schema.test_internals import GRAPHQL_CORE, STRAWBERRY, relied_on

SDL = """
directive @defer(label: String, if: Boolean! = true) on FRAGMENT_SPREAD | INLINE_FRAGMENT
directive @stream(label: String, initialCount: Int = 0, if: Boolean! = true) on FIELD
type Query { me: Customer  invoice(id: ID!): Invoice }
type Customer { id: ID!  name: String  invoices: [Invoice!]  tickets: [String!]  strict: Invoice! }
type Invoice { id: ID!  total: Int }
"""
SCHEMA = build_schema(SDL)


async def _slow_invoices(*_: Any) -> list[dict[str, Any]]:
    await asyncio.sleep(0.05)
    return [{"id": "in_1", "total": 100}, {"id": "in_2", "total": 200}]


async def _slow_tickets(*_: Any) -> AsyncIterator[str]:
    for ticket in ("t1", "t2", "t3"):
        await asyncio.sleep(0.01)
        yield ticket


async def _failing(*_: Any) -> Any:
    await asyncio.sleep(0.01)
    raise ValueError("billing is down")


ROOT = {
    "me": {
        "id": "1001",
        "name": "Ada",
        "invoices": _slow_invoices,
        "tickets": _slow_tickets,
        "strict": _failing,
    }
}


async def _answer(
    query: str, wire: WireFormat = WireFormat.DEFER_20220824, **options: Any
) -> IncrementalAnswer:
    result = experimental_execute_incrementally(
        SCHEMA, parse(query), ROOT, enable_early_execution=True
    )
    if not isinstance(result, ExperimentalIncrementalExecutionResults):
        result = await result  # type: ignore[misc]
    assert isinstance(result, ExperimentalIncrementalExecutionResults)
    return IncrementalAnswer(result, wire, _format, [], **options)


def _format(error: GraphQLError) -> dict[str, Any]:
    return {"message": error.message, "path": error.path}


async def _payloads(answer: IncrementalAnswer) -> list[dict[str, Any]]:
    return [await answer.first()] + [payload async for payload in answer.rest()]


DEFERRED = '{ me { id ... @defer(label: "b") { invoices { id total } } } }'


async def test_defer_20220824_puts_the_fragment_at_its_path_with_its_label() -> None:
    first, last = await _payloads(await _answer(DEFERRED))
    assert first == {"data": {"me": {"id": "1001"}}, "hasNext": True}
    assert last == {
        "incremental": [
            {
                "data": {"invoices": [{"id": "in_1", "total": 100}, {"id": "in_2", "total": 200}]},
                "path": ["me"],
                "label": "b",
            }
        ],
        "hasNext": False,
    }


async def test_a_stream_gives_the_index_of_its_first_item_and_the_answer_merges() -> None:
    answer = await _answer("{ me { tickets @stream(initialCount: 1) } }")
    payloads = await _payloads(answer)
    assert payloads[0] == {"data": {"me": {"tickets": ["t1"]}}, "hasNext": True}
    entries = [entry for p in payloads[1:] for entry in p.get("incremental", ())]
    assert [(e["path"], e["items"]) for e in entries] == [
        (["me", "tickets", 1], ["t2"]),
        (["me", "tickets", 2], ["t3"]),
    ]
    assert payloads[-1]["hasNext"] is False
    assert answer.merged() == {"data": {"me": {"tickets": ["t1", "t2", "t3"]}}}


async def test_a_part_nulled_whole_is_data_null_with_its_errors() -> None:
    _first, last = await _payloads(await _answer("{ me { id ... @defer { strict { id } } } }"))
    (failed,) = last["incremental"]
    assert failed["data"] is None
    assert failed["path"] == ["me"]
    assert failed["errors"] == [{"message": "billing is down", "path": ["me", "strict"]}]


async def test_v02_is_graphql_cores_own_shape_without_the_gateways_labels() -> None:
    soft = '{ me { id ... @defer(label: "gateway-soft-deadline:billing") { invoices { id } } } }'
    first, last = await _payloads(await _answer(soft, WireFormat.INCREMENTAL_V02))
    assert first == {
        "data": {"me": {"id": "1001"}},
        "pending": [{"id": "0", "path": ["me"]}],
        "hasNext": True,
    }
    assert last == {
        "incremental": [{"data": {"invoices": [{"id": "in_1"}, {"id": "in_2"}]}, "id": "0"}],
        "completed": [{"id": "0"}],
        "hasNext": False,
    }


async def test_a_soft_deferred_part_within_its_deadline_joins_the_first_payload() -> None:
    soft = '{ me { id ... @defer(label: "gateway-soft-deadline:billing") { invoices { id } } } }'
    within = await _answer(soft, soft_deadlines={"billing": 1.0})
    first = await within.first()
    assert within.has_next is False
    assert first == {"data": {"me": {"id": "1001", "invoices": [{"id": "in_1"}, {"id": "in_2"}]}}}
    past = await _answer(soft, soft_deadlines={"billing": 0.01})
    first = await past.first()
    assert past.has_next is True
    assert first == {"data": {"me": {"id": "1001"}}, "hasNext": True}
    await past.aclose()


def test_the_soft_rewrite_defers_provider_fields_in_fragments_too() -> None:
    document = parse(
        """query Page { me { id ...Bills ... @defer { tickets } } invoice(id: "in_1") { id } }
        fragment Bills on Customer { invoices { id } }"""
    )
    operation = document.definitions[0]
    rewritten = soft_deferred(SCHEMA, document, operation, {"billing"})  # type: ignore[arg-type]
    printed = print_ast(rewritten)
    assert '... @defer(label: "gateway-soft-deadline:billing") {\n    invoice(id: "in_1")' in (
        printed
    )
    assert 'fragment Bills on Customer {\n  ... @defer(label: "gateway-soft-deadline:billing")' in (
        printed
    )
    assert "tickets" in printed
    assert printed.count("gateway-soft-deadline") == 2
    assert print_ast(document).count("gateway-soft-deadline") == 0  # the input is unchanged
    assert isinstance(rewritten, DocumentNode)


def test_graphql_core_specifies_defer_and_stream_apart_from_the_standard_directives() -> None:
    with relied_on(GRAPHQL_CORE, "GraphQLDeferDirective, GraphQLStreamDirective"):
        assert GraphQLDeferDirective not in specified_directives
        assert set(GraphQLDeferDirective.args) == {"label", "if"}
        assert set(GraphQLStreamDirective.args) == {"label", "initialCount", "if"}


async def test_strawberrys_multipart_writer_frames_parts_as_clients_read_them() -> None:
    async def payloads() -> AsyncIterator[object]:
        yield {"data": {}, "hasNext": True}
        yield {"hasNext": False}

    with relied_on(STRAWBERRY, "strawberry.http.streaming.MultipartTransport"):
        transport = MultipartTransport()
        parts = [p async for p in transport.stream(payloads, lambda v: _json(v))()]
        assert transport.separator == "-"
        assert parts == [
            "---",
            "\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 26\r\n\r\n"
            '{"data":{},"hasNext":true}\r\n---',
            "\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 17\r\n\r\n"
            '{"hasNext":false}\r\n---',
            "--\r\n",
        ]


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


@pytest.mark.parametrize(
    ("accept", "wire"),
    [
        ("multipart/mixed;deferSpec=20220824, application/json", WireFormat.DEFER_20220824),
        ('multipart/mixed; deferSpec="20220824"', WireFormat.DEFER_20220824),
        ("multipart/mixed;incrementalSpec=v0.2,application/json", WireFormat.INCREMENTAL_V02),
        ("application/json, multipart/mixed", WireFormat.INCREMENTAL_V02),
        ("multipart/mixed;deferSpec=20190101", None),
        ("multipart/mixed;deferSpec=20220824;q=0", None),
        ("multipart/mixed;subscriptionSpec=1.0, application/json", None),
        ("application/json", None),
        ("", None),
    ],
)
def test_the_accept_header_chooses_the_format(accept: str, wire: WireFormat | None) -> None:
    assert incremental_wire(accept.encode()) is wire
