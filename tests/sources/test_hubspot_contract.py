"""Contract: the contact search the webhooks' link look-ups send keeps to HubSpot's spec.

HubSpot publishes its CRM v3 OpenAPI descriptions but does not license them for
redistribution, so ../shared/specs has none (its README says so). Where a copy is present
(`../shared/specs/hubspot/*.json` or `*.yaml`, e.g. the CRM contacts v3 spec), the body is
validated against its `PublicObjectSearchRequest`; otherwise that test skips, saying why.
Either way the body is checked against the request schema as HubSpot's reference publishes
it (transcribed below: five required fields, `sorts` an array of strings) and against its
documented example, and the fake HubSpot refuses what that schema refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from gateway.sources.hubspot import HubSpotCrm, search_body
from tests.fakes.hubspot import FakeHubSpot, search_shape_problem
from tests.sources.contract import SPEC_DIR
from tests.sources.test_hubspot import hubspot_settings

HUBSPOT_SPECS = SPEC_DIR / "hubspot"

# HubSpot's CRM v3 reference, PublicObjectSearchRequest (contacts, companies, every object).
PUBLISHED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["after", "filterGroups", "limit", "properties", "sorts"],
    "properties": {
        "query": {"type": "string"},
        "limit": {"type": "integer", "format": "int32"},
        "after": {"type": "string"},
        "sorts": {"type": "array", "items": {"type": "string"}},
        "properties": {"type": "array", "items": {"type": "string"}},
        "filterGroups": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["filters"],
                "properties": {
                    "filters": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["operator", "propertyName"],
                            "properties": {
                                "highValue": {"type": "string"},
                                "propertyName": {"type": "string"},
                                "values": {"type": "array", "items": {"type": "string"}},
                                "value": {"type": "string"},
                                "operator": {"type": "string"},
                            },
                        },
                    }
                },
            },
        },
    },
}

# HubSpot's documented example of a search body (its reference's request sample).
DOCUMENTED_EXAMPLE: dict[str, Any] = {
    "filterGroups": [
        {"filters": [{"propertyName": "email", "operator": "EQ", "value": "ada@example.com"}]}
    ],
    "sorts": ["createdate"],
    "properties": ["email", "firstname"],
    "limit": 10,
    "after": "0",
}


def _problems(schema: dict[str, Any], body: dict[str, Any]) -> list[str]:
    return [
        f"{list(error.absolute_path)}: {error.message}"
        for error in OAS30Validator(schema).iter_errors(body)
    ]


def _local_schema() -> dict[str, Any]:
    """PublicObjectSearchRequest from a local copy of HubSpot's spec, if there is one."""
    files = sorted(HUBSPOT_SPECS.glob("*.json")) + sorted(HUBSPOT_SPECS.glob("*.y*ml"))
    for path in files:
        document = yaml.safe_load(Path(path).read_text())
        schemas = document.get("components", {}).get("schemas", {})
        if "PublicObjectSearchRequest" in schemas:
            schema: dict[str, Any] = _resolved(schemas["PublicObjectSearchRequest"], schemas)
            return schema
    pytest.skip(
        f"no HubSpot spec with PublicObjectSearchRequest in {HUBSPOT_SPECS} (HubSpot's specs"
        " are not licensed for redistribution: put a copy there to run this check)"
    )


def _resolved(node: Any, schemas: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            return _resolved(schemas[ref.rsplit("/", 1)[1]], schemas)
        return {key: _resolved(value, schemas) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolved(value, schemas) for value in node]
    return node


BODIES = {
    "first page": search_body("zendesk_user_id", ["42", "43"], None),
    "next page": search_body("stripe_customer_id", ["cus_1"], "100"),
}


@pytest.mark.parametrize("page", list(BODIES))
def test_the_search_body_is_what_the_published_schema_accepts(page: str) -> None:
    body = BODIES[page]
    assert _problems(PUBLISHED_SCHEMA, body) == []
    assert search_shape_problem(body) is None
    # the documented example's shape: the same fields, each of the same JSON type
    assert set(body) == set(DOCUMENTED_EXAMPLE)
    for name, example in DOCUMENTED_EXAMPLE.items():
        assert type(body[name]) is type(example), name
    assert all(isinstance(sort, str) for sort in body["sorts"])


@pytest.mark.parametrize("page", list(BODIES))
def test_the_search_body_is_what_a_local_copy_of_the_spec_accepts(page: str) -> None:
    assert _problems(_local_schema(), BODIES[page]) == []


def test_the_checks_refuse_the_shape_hubspots_spec_refuses() -> None:
    """Sorts as objects and no `after`: what the adapter used to send."""
    old = {
        "filterGroups": [{"filters": [{"propertyName": "p", "operator": "IN", "values": ["1"]}]}],
        "properties": ["p"],
        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        "limit": 100,
    }
    assert len(_problems(PUBLISHED_SCHEMA, old)) == 2  # `after` missing; a sort not a string
    assert search_shape_problem(old) == "missing required fields: after"
    assert search_shape_problem({**old, "after": "0"}) == "sorts must be an array of strings"
    assert _problems(PUBLISHED_SCHEMA, DOCUMENTED_EXAMPLE) == []


@pytest.fixture
def hubspot() -> Iterator[FakeHubSpot]:
    with FakeHubSpot().running() as fake:
        yield fake


async def test_the_adapter_sends_that_body_and_the_fake_takes_it(hubspot: FakeHubSpot) -> None:
    ids = [hubspot.add(email=f"c{n}@example.com", zendesk_user_id=str(900 + n)) for n in range(3)]
    crm = HubSpotCrm(hubspot_settings(hubspot))
    try:
        found = await crm.customer_ids_by_link("helpdesk", ["900", "902", "999"])
    finally:
        await crm.aclose()
    assert found == [ids[0], ids[2], None]
    [call] = hubspot.calls_to("search")
    assert call.status == 200
    assert _problems(PUBLISHED_SCHEMA, call.json) == []
    assert call.json["sorts"] == ["hs_object_id"]
    assert call.json["after"] == "0"
