"""The facade's OpenAPI document: generated from the operations and the schema, valid
OpenAPI 3.1, and true of the served endpoints (a bounded schemathesis run finds no 5xx
and no answer the document does not allow)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from graphql import OperationType
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.rest import OPERATIONS, RestOperation, openapi_document
from gateway.schema import build_schema
from gateway.schema.internals import graphql_schema
from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway
from tests.servers import free_port

SCHEMA = graphql_schema(build_schema())
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_the_served_document_validates(gateway_server: GatewayServer) -> None:
    response = gateway_server.http.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)  # raises on an invalid OpenAPI 3.1 document
    assert document["openapi"] == "3.1.0"
    assert document == openapi_document(SCHEMA)
    served = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    assert served == {(op.path, op.method) for op in OPERATIONS}


def test_types_come_from_the_schema() -> None:
    paths = openapi_document(SCHEMA)["paths"]
    invoice = paths["/api/invoices/{id}"]["get"]["responses"]["200"]["content"]
    properties = invoice["application/json"]["schema"]["properties"]
    assert properties["status"]["enum"] == ["DRAFT", "OPEN", "PAID", "VOID", "UNCOLLECTIBLE"]
    assert properties["total"]["type"] == "integer"  # Int!
    assert properties["number"]["type"] == ["string", "null"]  # String
    assert properties["createdAt"]["format"] == "date-time"
    assert properties["amountDue"]["description"] == "What is still owed now; 0 when paid or void."
    put = paths["/api/customers/{id}"]["put"]["requestBody"]["content"]["application/json"]
    assert put["schema"]["additionalProperties"] is False
    assert set(put["schema"]["properties"]) == {"name", "phone", "company"}
    post = paths["/api/tickets"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["subject", "description"]
    assert "Idempotency-Key" in [p["name"] for p in post["parameters"]]
    tickets = paths["/api/customers/{id}/tickets"]["get"]
    status = next(p for p in tickets["parameters"] if p["name"] == "status")
    assert "ON_HOLD" in status["schema"]["enum"]
    assert "Link" in tickets["responses"]["200"]["headers"]


def test_a_changed_selection_changes_the_document() -> None:
    """Nothing is written by hand: another selection over the schema, another schema."""
    operation = RestOperation(
        name="RestInvoiceCustomer",
        method="GET",
        path="/api/invoices/{id}/customer",
        summary="The customer of an invoice",
        document="query RestInvoiceCustomer($id: ID!) "
        "{ invoice(id: $id) { id customer { id email } } }",
        result=("invoice",),
        kind=OperationType.QUERY,
    )
    document = openapi_document(SCHEMA, (operation,))
    validate(document)
    answer = document["paths"]["/api/invoices/{id}/customer"]["get"]["responses"]["200"]
    properties = answer["content"]["application/json"]["schema"]["properties"]
    customer = properties["customer"]
    assert customer["type"] == ["object", "null"]  # Customer, nullable
    assert set(customer["properties"]) == {"id", "email"}
    assert customer["properties"]["id"] == {"type": "string"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    settings_ = Settings(
        _env_file=None,  # type: ignore[call-arg]
        auth_dev_secret="openapi-dev-secret-" + "x" * 24,
        sandbox_files_dir=Path(tmp_path_factory.mktemp("files")),
        port=free_port(),
        rate_limit_viewer="off",
        rate_limit_ip="off",
    )
    with running_gateway(settings_) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def customer_auth(served: GatewayServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {served.token('1001')}"}


# the document the gateway serves (test_the_served_document_validates holds them equal);
# loaded eagerly: schemathesis' lazy fixture loader reaches into pytest's private node id
api = schemathesis.openapi.from_dict(openapi_document(SCHEMA))


@api.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_answer_breaks_the_document(
    case: Any, served: GatewayServer, customer_auth: dict[str, str]
) -> None:
    case.call_and_validate(base_url=served.url, headers=customer_auth, checks=CHECKS)


def test_the_reference_page_follows_gateway_graphiql(
    start: Callable[..., GatewayServer],
) -> None:
    on = start(gateway_graphiql=True)
    page = on.http.get("/api/docs")
    assert page.status_code == 200
    assert "/static/swagger-ui/swagger-ui-bundle.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert on.http.get("/static/swagger-ui/start.js").status_code == 200
    off = start(gateway_graphiql=False)
    assert off.http.get("/api/docs").status_code == 404
    assert off.http.get("/static/swagger-ui/swagger-ui-bundle.js").status_code == 404
    assert off.http.get("/api/openapi.json").status_code == 200  # REST clients need it
