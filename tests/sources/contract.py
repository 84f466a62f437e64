"""Checks a recorded exchange with a fake provider against the provider's OpenAPI description.

The Zendesk description is Zendesk's published `oas.yaml`, kept in ../shared/specs/zendesk/
(see ../shared/specs/README.md for its origin and known gaps). The gaps handled here:

- `GET /api/v2/users/{user_id}/tickets/requested` is missing from the file. It is the
  requester-scoped form of List Tickets (`GET /api/v2/tickets`) and answers the same
  `TicketsResponse`, so the exchange is validated as List Tickets. List Tickets in the file
  declares no pagination or sort parameters either, so those are checked here by hand
  against Zendesk's documented cursor pagination (`page[size]` 1-100, `page[after]`) and
  sorting (`sort_by`, `sort_order`).
- The file declares no error responses (401, 404, 429, 5xx) for these operations: only
  answers with a status the file declares are validated; the error paths are covered by the
  adapter tests against the fake.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from tests.fakes.provider import Call

__all__ = ["SPEC_DIR", "ZENDESK_HOST", "ZENDESK_SPEC", "check_zendesk_call", "zendesk_spec"]

# ../shared beside the project (as on developers' machines and in CI)
SPEC_DIR = Path(__file__).resolve().parents[3] / "shared" / "specs"
ZENDESK_SPEC = SPEC_DIR / "zendesk" / "oas.yaml"
# The file's server is https://{subdomain}.zendesk.com; the fake's address stands in for it.
ZENDESK_HOST = "https://example.zendesk.com"

_REQUESTED = re.compile(r"^/api/v2/users/\d+/tickets/requested$")
_LIST_TICKETS = "/api/v2/tickets"
_SORT_BY = {
    "id",
    "subject",
    "deleted_at",
    "created_at",
    "updated_at",
    "status",
    "requester",
    "requester.name",
    "group",
    "assignee",
    "assignee.name",
}


def zendesk_spec() -> OpenAPI:
    """The Zendesk Support API description, parsed once per test session."""
    return _zendesk()[0]


@functools.cache
def _zendesk() -> tuple[OpenAPI, dict[str, Any]]:
    if not ZENDESK_SPEC.exists():
        pytest.skip(f"{ZENDESK_SPEC} is missing: the contract tests need ../shared/specs")
    with ZENDESK_SPEC.open() as handle:
        document = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    # The file itself is Zendesk's and is taken as published: checking it against the
    # OpenAPI meta-schema on every run would cost seconds and prove nothing about us.
    return OpenAPI.from_dict(document, config=Config(spec_validator_cls=None)), document


def _template(document: dict[str, Any], path: str) -> str:
    """The spec's path template that `path` matches, literal segments preferred."""
    if path in document["paths"]:
        return path
    candidates = [
        template
        for template in document["paths"]
        if re.fullmatch(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)), path)
    ]
    assert candidates, f"{path} is in no path of the spec"
    return min(candidates, key=lambda template: template.count("{"))


def _check_requested_params(call: Call) -> None:
    """What the file cannot check for the requested-tickets call (see the module doc)."""
    params = dict(call.params)
    size = params.pop("page[size]", None)
    assert size is not None, call.query
    assert size.isdigit(), call.query
    assert 1 <= int(size) <= 100, call.query
    after = params.pop("page[after]", None)
    assert after is None or after, call.query
    assert params.pop("sort_by", "id") in _SORT_BY, call.query
    assert params.pop("sort_order", "asc") in ("asc", "desc"), call.query
    assert not params, f"undocumented parameters {sorted(params)}"


def check_zendesk_call(call: Call, *, answer: bool = True) -> str:
    """Validate one recorded request, and its answer where the file declares the status
    (`answer=False`: the request only, e.g. for an answer a test broke on purpose).

    Raises (an openapi-core validation error or AssertionError) when either breaks the
    contract; answers the path the exchange was validated as.
    """
    spec, document = _zendesk()
    path = call.path
    if _REQUESTED.match(path):
        _check_requested_params(call)
        path = _LIST_TICKETS
    content_type = call.headers.get("content-type", "application/json")
    request = MockRequest(
        ZENDESK_HOST,
        call.method.lower(),
        path,
        args=dict(call.params),
        headers=call.headers,
        data=call.body or None,
        content_type=content_type.split(";")[0],
    )
    spec.validate_request(request)
    result = spec.unmarshal_request(request)
    assert result.errors == [], result.errors
    operation = document["paths"][_template(document, path)][call.method.lower()]
    declared = {str(code) for code in operation["responses"]}
    if answer and str(call.status) in declared:
        response = MockResponse(
            call.response_body,
            status_code=call.status,
            headers=call.response_headers,
            content_type=call.response_headers.get("content-type", "").split(";")[0],
        )
        spec.validate_response(request, response)
    return path
