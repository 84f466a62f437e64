"""A developer reading the REST reference: /api/docs in headless Chromium (js/api_docs.cjs).

Swagger UI, fetched from npm at setup and served by the gateway, renders the generated
/api/openapi.json. Every request the page makes must go to 127.0.0.1. The screenshot is
kept in test-artifacts/.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.rest import OPERATIONS
from tests.conftest import GatewayServer
from tests.e2e.conftest import assert_rendered

SCREENSHOT = "api-docs.png"


@pytest.fixture(scope="module")
def session(browse: Callable[..., dict[str, Any]], e2e_gateway: GatewayServer) -> dict[str, Any]:
    return browse("api_docs.cjs", SCREENSHOT, GATEWAY_URL=e2e_gateway.url)


def test_the_reference_shows_every_endpoint(session: dict[str, Any]) -> None:
    assert session["status"] == 200
    assert session["title"] == "portal-gateway · REST API"
    assert session["apiTitle"].startswith("portal-gateway REST API")
    shown = {" ".join(op.split()) for op in session["operations"]}
    assert shown == {f"{op.method} {op.path}" for op in OPERATIONS}


def test_an_operation_shows_its_generated_parameters_and_responses(
    session: dict[str, Any],
) -> None:
    assert session["invoiceParameters"] == ["id", "first", "after", "status"]
    statuses = session["invoiceResponses"]
    for status in ("200", "304", "401", "404", "422", "429", "503"):
        assert status in statuses


def test_every_request_of_the_page_stays_on_127_0_0_1(session: dict[str, Any]) -> None:
    assert session["external"] == []
    hosts = {urlsplit(url).hostname for url in session["requests"]}
    assert hosts == {"127.0.0.1"}
    paths = {urlsplit(url).path for url in session["requests"]}
    assert "/static/swagger-ui/swagger-ui-bundle.js" in paths
    assert "/api/openapi.json" in paths
    assert "default-src 'self'" in session["csp"]
    assert session["pageErrors"] == []
    assert session["consoleErrors"] == []


def test_a_screenshot_of_the_reference_is_kept(session: dict[str, Any]) -> None:
    assert_rendered(Path(session["screenshot"]))
