"""Contract: every request the Stripe adapter sends is one Stripe's OpenAPI spec accepts.

The adapter runs every operation it has (pages, filters, cursors, by id, subscriptions,
email lookup, portal session, the not-found paths) against the fake Stripe; then each
recorded request is checked against ../shared/specs/stripe/spec3.2023-09-12.json: the path
and method exist, every query or form parameter is declared for that operation (deepObject
names such as `expand[]` by their base name), required ones are present, and scalar values
fit the declared schema. With the spec's own API version the fake's answers are checked
against the spec's response schemas too, so the fake cannot drift from Stripe's shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from gateway.domain import InvoiceQuery, InvoiceStatus
from gateway.errors import BadUserInput, NotFound
from gateway.settings import Settings
from gateway.sources.stripe import StripeBilling
from tests.fakes.stripe import FakeStripe, StripeCall, running_fake_stripe

SPEC = Path(__file__).resolve().parents[3] / "shared" / "specs" / "stripe"
SPEC_FILE = SPEC / "spec3.2023-09-12.json"
SPEC_VERSION = "2023-08-16"  # the API version the spec file describes
SPEC_URI = "urn:stripe-spec3"
API_KEY = "sk_test_contract"


@cache
def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(SPEC_FILE.read_text())
    return spec


@cache
def _routes() -> list[tuple[re.Pattern[str], str]]:
    """(regex, template) for every path; literal paths before templated ones."""
    routes = []
    for template in _spec()["paths"]:
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        routes.append((re.compile(f"^{pattern}$"), template))
    routes.sort(key=lambda route: route[1].count("{"))
    return routes


def _json_schema_nullable(node: Any) -> Any:
    """OAS 3.0 `nullable` as JSON Schema says it where the validator would not: beside
    `anyOf` (Stripe's expandable fields) and on enums that do not list null."""
    if isinstance(node, list):
        return [_json_schema_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _json_schema_nullable(value) for key, value in node.items()}
    if out.get("nullable") and "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]  # OAS 3.0.3: a nullable enum lists null
    if out.get("nullable") and "type" not in out:
        for combinator in ("anyOf", "oneOf"):
            if combinator in out:
                out[combinator] = [*out[combinator], {"enum": [None]}]
    return out


@cache
def _registry() -> Registry:
    contents = _json_schema_nullable(_spec())
    resource: Resource[Any] = Resource.from_contents(contents, default_specification=DRAFT4)
    return Registry().with_resource(SPEC_URI, resource)


def _pointer(*parts: str) -> str:
    escaped = (part.replace("~", "~0").replace("/", "~1") for part in parts)
    return f"{SPEC_URI}#/" + "/".join(escaped)


def _coerce(value: str, schema: dict[str, Any]) -> Any:
    """A query/form string as the scalar its schema declares."""
    kind = schema.get("type")
    if kind == "integer":
        return int(value) if re.fullmatch(r"-?\d+", value) else value
    if kind == "boolean":
        return {"true": True, "false": False}.get(value, value)
    return value


def request_problems(call: StripeCall) -> list[str]:
    """Why the spec would refuse this request (empty: it accepts it)."""
    template = next((t for regex, t in _routes() if regex.match(call.path)), None)
    if template is None:
        return [f"{call.path}: no such path in the spec"]
    operation = _spec()["paths"][template].get(call.method.lower())
    if operation is None:
        return [f"{call.method} {template}: no such operation in the spec"]
    where = f"{call.method} {template}"
    if call.method == "GET":
        declared = {
            p["name"]: (p["schema"], p.get("required", False))
            for p in operation.get("parameters", [])
            if p["in"] == "query"
        }
    else:
        content = operation.get("requestBody", {}).get("content", {})
        body = content.get("application/x-www-form-urlencoded")
        if body is None:
            return [f"{where}: the spec takes no form body"]
        schema = body["schema"]
        required = set(schema.get("required", []))
        declared = {
            name: (prop, name in required) for name, prop in schema.get("properties", {}).items()
        }
        if call.headers.get("content-type", "").split(";")[0] != (
            "application/x-www-form-urlencoded"
        ):
            return [f"{where}: body is not form-encoded"]
    problems = []
    sent = {name.split("[", 1)[0] for name, _value in call.params}
    for name, value in call.params:
        base = name.split("[", 1)[0]
        if base not in declared:
            problems.append(f"{where}: parameter {name!r} is not declared")
            continue
        schema = declared[base][0]
        if base == name and schema.get("type") in ("string", "integer", "boolean"):
            validator = OAS30Validator(schema)
            for error in validator.iter_errors(_coerce(value, schema)):
                problems.append(f"{where}: {name}={value!r}: {error.message}")
    for name, (_schema, required) in declared.items():
        if required and name not in sent:
            problems.append(f"{where}: required parameter {name!r} is missing")
    return problems


def response_problems(call: StripeCall) -> list[str]:
    """Why the spec's response schema would refuse what the fake answered."""
    if call.status is None or call.response is None:
        return []
    template = next(t for regex, t in _routes() if regex.match(call.path))
    responses = _spec()["paths"][template][call.method.lower()]["responses"]
    code = str(call.status) if str(call.status) in responses else "default"
    pointer = _pointer(
        "paths", template, call.method.lower(), "responses", code, "content", "application/json"
    )
    validator = OAS30Validator({"$ref": pointer + "/schema"}, registry=_registry())
    where = f"{call.method} {call.path} -> {call.status}"
    return [
        f"{where}: {error.json_path}: {error.message}"
        for error in validator.iter_errors(call.response)
    ][:5]


def test_the_validator_refuses_what_the_spec_does() -> None:
    """The checks below can fail: a request outside the spec is reported."""

    def call(method: str, path: str, params: list[tuple[str, str]]) -> StripeCall:
        headers = {"content-type": "application/x-www-form-urlencoded"}
        return StripeCall(method, path, params, headers, 0.0)

    assert request_problems(call("GET", "/v1/invoices", [("customer", "cus_1")])) == []
    assert request_problems(call("GET", "/v1/invoices", [("expand[]", "data.customer")])) == []
    assert request_problems(call("GET", "/v1/invoices/in_1", [])) == []
    assert request_problems(call("GET", "/v1/invoicez", []))
    assert request_problems(call("DELETE", "/v1/invoices", []))
    assert request_problems(call("GET", "/v1/invoices", [("owner", "cus_1")]))
    assert request_problems(call("GET", "/v1/invoices", [("status", "unpaid")]))
    assert request_problems(call("GET", "/v1/invoices", [("limit", "ten")]))
    assert request_problems(call("GET", "/v1/subscriptions", [("status", "everything")]))
    assert request_problems(call("POST", "/v1/billing_portal/sessions", [("return_url", "x")]))
    assert response_problems(
        StripeCall("GET", "/v1/invoices/in_1", [], {}, 0.0, 200, {"id": "in_1"})
    )


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeStripe]:
    with running_fake_stripe(API_KEY) as running:
        yield running


@pytest.mark.parametrize("version", [None, SPEC_VERSION], ids=["sdk-pinned", "spec-version"])
async def test_every_request_the_adapter_makes_is_in_the_spec(
    fake: FakeStripe, version: str | None
) -> None:
    fake.reset()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        stripe_api_key=API_KEY,
        stripe_api_base=fake.url,
        stripe_api_version=version,
        retry_base_delay=0.01,
    )
    ada = fake.add_customer(email="ada@example.com", name="Ada")
    grace = fake.add_customer(email="grace@example.com")
    invoices = [
        fake.add_invoice(ada, status=status, total=1000 + n, created=1_700_000_000 + n)
        for n, status in enumerate(["draft", "open", "paid", "void", "uncollectible"] * 3)
    ]
    fake.add_subscription(ada, status="active")
    fake.add_subscription(ada, status="canceled", cancel_at_period_end=True)

    billing = StripeBilling(settings)
    try:
        first, *others = await billing.invoice_pages(
            [
                InvoiceQuery(billing_id=ada, first=4),
                InvoiceQuery(billing_id=ada, first=100, status=InvoiceStatus.PAID),
                InvoiceQuery(billing_id=grace),
                InvoiceQuery(billing_id="cus_unknown"),
            ]
        )
        assert not isinstance(first, Exception)
        assert all(not isinstance(page, Exception) for page in others)
        [second] = await billing.invoice_pages(
            [InvoiceQuery(billing_id=ada, first=4, after=first.next_cursor)]
        )
        assert not isinstance(second, Exception)
        [bad_cursor] = await billing.invoice_pages(
            [InvoiceQuery(billing_id=ada, after="in_nowhere")]
        )
        assert isinstance(bad_cursor, BadUserInput)
        found = await billing.invoices([invoices[0], "in_unknown"])
        assert found[0] is not None
        assert found[1] is None
        [subscriptions] = await billing.subscriptions([ada])
        assert not isinstance(subscriptions, Exception)
        assert len(subscriptions) == 2
        assert await billing.billing_ids_by_email(["ada@example.com", "x@y.z"]) == [ada, None]
        # a staff view of six customers: the invoice search; totals: the search's count
        others = [fake.add_customer(email=f"c{n}@example.com") for n in range(4)]
        for n, customer in enumerate(others):
            fake.add_invoice(customer, status="open", total=100 + n)
        staff = await billing.invoice_pages_indexed(
            [InvoiceQuery(billing_id=c, first=2) for c in (ada, grace, *others)]
        )
        assert all(not isinstance(page, Exception) for page in staff)
        counts = await billing.invoice_counts(
            [InvoiceQuery(billing_id=ada), InvoiceQuery(billing_id=ada, status=InvoiceStatus.PAID)]
        )
        assert counts == [15, 3]
        session = await billing.create_portal_session(ada, "https://portal.example.com/")
        assert session.url.startswith("https://")
        with pytest.raises(NotFound):
            await billing.create_portal_session("cus_unknown", "https://portal.example.com/")
    finally:
        await billing.aclose()

    operations = {(call.method, call.path.rsplit("/", 1)[0]) for call in fake.calls}
    assert {call.path for call in fake.calls} >= {"/v1/invoices/search"}
    assert operations >= {
        ("GET", "/v1"),  # /v1/invoices, /v1/subscriptions, /v1/customers
        ("GET", "/v1/invoices"),  # /v1/invoices/{invoice}
        ("POST", "/v1/billing_portal"),
    }
    problems = [problem for call in fake.calls for problem in request_problems(call)]
    assert problems == []
    for call in fake.calls:
        assert call.headers["stripe-version"] == (
            version or fake.calls[0].headers["stripe-version"]
        )
        if call.method == "POST":
            assert call.headers.get("idempotency-key")
    if version == SPEC_VERSION:
        answered = [problem for call in fake.calls for problem in response_problems(call)]
        assert answered == []


async def test_the_fakes_search_keeps_stripes_limits(fake: FakeStripe) -> None:
    fake.reset()
    customers = [fake.add_customer(email=f"c{n}@example.com") for n in range(11)]
    for n, customer in enumerate(customers):
        fake.add_invoice(customer, status="paid" if n % 2 else "open", created=1_700_000_000 + n)
    headers = {"Authorization": f"Bearer {API_KEY}"}

    def either(ids: list[str]) -> str:
        return " OR ".join(f"customer:'{c}'" for c in ids)

    async with httpx.AsyncClient(base_url=fake.url, headers=headers) as client:

        async def search(**params: Any) -> httpx.Response:
            return await client.get("/v1/invoices/search", params=params)

        ten = await search(query=either(customers[:10]), limit="4")
        assert ten.status_code == 200
        assert [i["customer"] for i in ten.json()["data"]] == customers[9:5:-1]  # newest first
        assert ten.json()["has_more"] is True
        following = await search(
            query=either(customers[:10]), limit="4", page=ten.json()["next_page"]
        )
        assert len(following.json()["data"]) == 4
        counted = await search(
            query=f"customer:'{customers[1]}' AND status:'paid'", **{"expand[]": "total_count"}
        )
        assert counted.json()["total_count"] == 1
        refused = [
            await search(query=either(customers)),  # 11 clauses
            await search(query=f"customer:'{customers[0]}' AND status:'paid' OR status:'open'"),
            await search(query=either(customers[:1]) + " OR " + "x" * 5000),
            await search(query=either(customers[:1]), limit="101"),
            await search(
                query=either(customers[:2]), page=ten.json()["next_page"]
            ),  # not its query
        ]
    assert [r.status_code for r in refused] == [400] * 5
    problems = [p for call in fake.calls for p in request_problems(call) if call.status == 200]
    assert problems == []
