"""The Xero adapter's requests, and the fake Xero's answers to them, against Xero's own
OpenAPI description (../shared/specs/xero/xero_accounting.yaml, Xero-OpenAPI v16.1.0).

The description's server is `https://api.xero.com/api.xro/2.0`; the fake, like a mock built
from the file, serves without the base path, so each recorded path is validated under it.
The file declares OAuth2 security, which openapi-core cannot check (the bearer is covered by
the fake's 401s), and no error answers: only 200s are validated as answers.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import date
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from redis.asyncio import Redis

from gateway.domain import InvoiceQuery
from gateway.settings import Settings
from gateway.sources.xero import XeroBilling
from tests.fakes.oauth import CLIENT_ID, CLIENT_SECRET, FakeAuthorizationServer
from tests.fakes.provider import Call
from tests.fakes.xero import TENANT_ID, FakeXero
from tests.sources.contract import SPEC_DIR

XERO_SPEC = SPEC_DIR / "xero" / "xero_accounting.yaml"
XERO_HOST = "https://api.xero.com"
BASE_PATH = "/api.xro/2.0"


@functools.cache
def _xero() -> tuple[OpenAPI, dict[str, Any]]:
    if not XERO_SPEC.exists():
        pytest.skip(f"{XERO_SPEC} is missing: the contract tests need ../shared/specs")
    with XERO_SPEC.open() as handle:
        document = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    # Xero's file is taken as published: validating it against the meta-schema proves
    # nothing about the gateway and costs seconds.
    return OpenAPI.from_dict(document, config=Config(spec_validator_cls=None)), document


def _declared(document: dict[str, Any], path: str, method: str) -> set[str]:
    """Names of the query parameters Xero's file declares for the operation."""
    item = document["paths"][path]
    names = set()
    for parameter in [*item.get("parameters", []), *item[method].get("parameters", [])]:
        if "$ref" in parameter:
            parameter = document["components"]["parameters"][parameter["$ref"].split("/")[-1]]
        if parameter["in"] == "query":
            names.add(parameter["name"])
    return names


def check_xero_call(call: Call) -> None:
    """Validate one recorded exchange; raises when the request or its 200 answer breaks
    Xero's description."""
    spec, document = _xero()
    method = call.method.lower()
    assert call.path in document["paths"], f"{call.path} is not in Xero's API"
    undeclared = {name for name, _ in call.params} - _declared(document, call.path, method)
    assert not undeclared, f"parameters Xero does not declare: {sorted(undeclared)}"
    request = MockRequest(
        XERO_HOST, method, BASE_PATH + call.path, args=dict(call.params), headers=call.headers
    )
    with warnings.catch_warnings():
        # "Unsupported scheme type": OAuth2, see the module docstring
        warnings.simplefilter("ignore", UserWarning)
        result = spec.unmarshal_request(request)
        assert result.errors == [], result.errors
        if call.status == 200:
            response = MockResponse(
                call.response_body,
                status_code=200,
                headers=call.response_headers,
                content_type="application/json",
            )
            spec.validate_response(request, response)


@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeXero]:
    with FakeAuthorizationServer().running() as auth, FakeXero(auth).running() as fake:
        yield fake


@pytest.fixture
async def billing(fakes: FakeXero, redis_url: str, cache_prefix: str) -> AsyncIterator[XeroBilling]:
    fakes.auth.reset()
    fakes.reset()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        billing_source="xero",
        xero_client_id=CLIENT_ID,
        xero_client_secret=CLIENT_SECRET,
        xero_tenant_id=TENANT_ID,
        xero_refresh_token=fakes.auth.connect(),
        xero_api_base=fakes.url,
        xero_token_url=fakes.auth.token_url,
        token_encryption_key=Fernet.generate_key().decode(),
        cache_prefix=cache_prefix,
        retry_base_delay=0.01,
    )
    redis: Redis = Redis.from_url(redis_url)
    adapter = XeroBilling(settings, redis)
    yield adapter
    await adapter.aclose()
    await redis.aclose()


async def test_every_request_and_answer_follows_xeros_description(
    fakes: FakeXero, billing: XeroBilling
) -> None:
    contacts = [fakes.add_contact(f"Customer {n}", f"c{n}@example.com") for n in range(45)]
    invoice_ids = []
    for n, contact in enumerate(contacts):
        status = ("DRAFT", "SUBMITTED", "AUTHORISED", "PAID", "VOIDED")[n % 5]
        invoice_ids.append(
            fakes.add_invoice(
                contact,
                status=status,
                total="120.50",
                amount_paid="20.00" if status == "AUTHORISED" else "0",
                day=date(2026, 1, 1 + n % 28),
                due=date(2026, 3, 1),
            )
        )

    await billing.invoice_pages([InvoiceQuery(c, first=5) for c in contacts])
    await billing.invoices(invoice_ids[:3])
    await billing.billing_ids_by_email(["c7@example.com"])

    calls = fakes.calls
    assert {call.path for call in calls} == {"/Invoices", "/Contacts"}
    assert len(calls) == 4
    for call in calls:
        assert call.status == 200
        check_xero_call(call)


def test_the_check_catches_what_xero_would_refuse() -> None:
    good = Call(
        route="invoices",
        method="GET",
        path="/Invoices",
        query="",
        params=[("ContactIDs", "a3675fc4-f8dd-4f03-ba5b-f1870566bcd7"), ("page", "1")],
        headers={"xero-tenant-id": TENANT_ID, "accept": "application/json"},
        body=b"",
        json=None,
        at=0.0,
    )
    check_xero_call(good)
    without_tenant = replace(good, headers={"accept": "application/json"})
    not_a_uuid = replace(good, params=[("ContactIDs", "cus_123")])
    undeclared = replace(good, params=[("contact", "a3675fc4-f8dd-4f03-ba5b-f1870566bcd7")])
    wrong_answer = replace(
        good, status=200, response_body=b'{"Invoices": [{"Total": "a lot", "Status": "OWED"}]}'
    )
    for broken in (without_tenant, not_a_uuid, undeclared, wrong_answer):
        with pytest.raises(Exception):  # noqa: B017, PT011 - openapi-core's or AssertionError
            check_xero_call(broken)
