"""A bounded fuzz run: GraphQL documents generated from the schema, sent to the running server.

Valid queries and mutations (hypothesis-graphql, arguments drawn at random: ids, strings,
cursors, `first` values, federation representations) and invalid documents (its negative
mode), as a customer, staff, a service and nobody. Whatever the document, the gateway must
answer without a 500, without an unmasked error, without a traceback, and stay up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import graphql
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, mutations, nodes, queries

from gateway.auth import mint_dev_token
from gateway.schema import build_schema
from gateway.schema.internals import graphql_schema
from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway

SERVICE_KEY = "fuzz-service-key-0123456789"
MAX_EXAMPLES = 150

# Ids that exist in the sandbox next to random ones: the interesting paths need real data.
IDS = st.one_of(
    st.sampled_from(["1001", "1002", "1003", "in_sbx0001001", "10000", "cus_sbx0001", "0", ""]),
    st.text(max_size=30),
)
TYPENAMES = st.sampled_from(["Customer", "Invoice", "Ticket", "File", "Query", "Nope", ""])


def _representation() -> st.SearchStrategy[graphql.ValueNode]:
    """A federation `_Any`: mostly {__typename, id} objects, sometimes anything at all."""
    field = graphql.ObjectFieldNode
    name = graphql.NameNode
    entity = st.builds(
        lambda typename, id_: nodes.Object(
            [
                field(name=name(value="__typename"), value=nodes.String(typename)),
                field(name=name(value="id"), value=nodes.String(id_)),
            ]
        ),
        TYPENAMES,
        IDS,
    )
    odd = st.one_of(
        IDS.map(nodes.String),
        st.integers().map(nodes.Int),
        st.just(nodes.Null),
        st.just(nodes.Object([])),
    )
    return st.one_of(entity, entity, odd)


CUSTOM_SCALARS: dict[str, st.SearchStrategy[graphql.ValueNode]] = {
    "_Any": _representation(),
    "DateTime": st.datetimes().map(lambda d: nodes.String(d.isoformat())),
}


@pytest.fixture
def server(make_settings: Callable[..., Settings]) -> Iterator[GatewayServer]:
    """The whole gateway (sandbox providers); the incoming rate limits off, for the volume."""
    settings = make_settings(
        service_api_keys=[SERVICE_KEY],
        rate_limit_viewer="off",
        rate_limit_service="off",
        rate_limit_ip="off",
    )
    with running_gateway(settings) as gateway:
        yield gateway


def _documents() -> st.SearchStrategy[str]:
    schema = graphql_schema(build_schema())
    return st.one_of(
        queries(schema, custom_scalars=CUSTOM_SCALARS),
        queries(schema, custom_scalars=CUSTOM_SCALARS),
        mutations(schema, custom_scalars=CUSTOM_SCALARS),
        queries(schema, custom_scalars=CUSTOM_SCALARS, mode=Mode.NEGATIVE),
    )  # type: ignore[return-value]


def _check(response: httpx.Response, document: str) -> None:
    context = f"\n{document}\n-> {response.status_code} {response.text[:2000]}"
    assert response.status_code < 500, context
    assert "Traceback" not in response.text, context
    body: dict[str, Any] = response.json()
    for error in body.get("errors") or []:
        assert error.get("extensions", {}).get("code") != "INTERNAL_SERVER_ERROR", context
        assert error["message"] != "Internal server error", context


def test_generated_documents_never_break_the_gateway(server: GatewayServer) -> None:
    secret = server.settings.dev_secret()
    assert secret is not None
    credentials = [
        {"Authorization": f"Bearer {mint_dev_token(secret, '1001')}"},
        {"Authorization": f"Bearer {mint_dev_token(secret, None, ['staff'])}"},
        {"X-API-Key": SERVICE_KEY},
        {},
    ]
    sent: list[str] = []

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,  # nothing written into the work tree
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(document=_documents(), headers=st.sampled_from(credentials))
    def fuzz(document: str, headers: dict[str, str]) -> None:
        sent.append(document)
        response = server.http.post("/graphql", json={"query": document}, headers=headers)
        _check(response, document)

    fuzz()
    assert len(sent) >= MAX_EXAMPLES

    # still up, and still answering properly
    assert server.http.get("/healthz").status_code == 200
    home = server.query(
        "{ me { id invoices(first: 1) { totalCount } } }", token=server.token("1001")
    )
    assert home.json() == {"data": {"me": {"id": "1001", "invoices": {"totalCount": 12}}}}


def test_malformed_federation_representations_fail_only_their_own_item(
    server: GatewayServer,
) -> None:
    """What the fuzz run found: strawberry's `_entities` failed whole on one bad item."""
    query = """{ _entities(representations: [
        "1001",
        {__typename: "Customer", id: "1001"},
        {__typename: "Nope", id: "1"},
        {__typename: "Customer", id: "1002", extra: 1},
        {id: "1003"},
        {__typename: "Customer", id: {nested: true}},
        {__typename: "Customer", id: 1003}
    ]) { ... on Customer { id } } }"""
    response = server.query(query, token=server.token(None, ["staff"]))
    assert response.status_code == 200
    body = response.json()
    assert body["data"]["_entities"] == [
        None,
        {"id": "1001"},
        None,
        None,
        None,
        None,
        {"id": "1003"},
    ]
    errors = {tuple(e["path"]): e["extensions"]["code"] for e in body["errors"]}
    assert errors == {("_entities", i): "BAD_USER_INPUT" for i in (0, 2, 3, 4, 5)}
