"""A developer reading the REST reference: /api/docs in headless Chromium (js/api_docs.cjs).

Swagger UI, fetched from npm at setup and served by the gateway, renders the generated
/api/openapi.json. Every request the page makes must go to 127.0.0.1. The screenshot is
kept in test-artifacts/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.rest import OPERATIONS
from tests.conftest import GatewayServer
from tests.e2e.node import Node

SCREENSHOT = "api-docs.png"


@pytest.fixture(scope="module")
def session(
    node: Node, chromium: str, e2e_gateway: GatewayServer, artifacts_dir: Path
) -> dict[str, Any]:
    screenshot = artifacts_dir / SCREENSHOT
    screenshot.unlink(missing_ok=True)
    return node.run(
        "api_docs.cjs",
        GATEWAY_URL=e2e_gateway.url,
        CHROMIUM=chromium,
        SCREENSHOT=str(screenshot),
    )


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
    data = Path(session["screenshot"]).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000  # a rendered page, not a blank one
