"""A developer in GraphiQL: the gateway's own page in headless Chromium (js/graphiql.cjs).

The browser opens /graphql, pastes a bearer token into the Headers tab, runs the preloaded
PortalHome query and reads the answer off the page. Every request
the page makes must go to 127.0.0.1. The screenshot is kept in test-artifacts/.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import GatewayServer
from tests.e2e.conftest import assert_rendered

SCREENSHOT = "graphiql-portal-home.png"


@pytest.fixture(scope="module")
def session(browse: Callable[..., dict[str, Any]], e2e_gateway: GatewayServer) -> dict[str, Any]:
    """One browser session's report (what the page showed, sent and requested)."""
    return browse(
        "graphiql.cjs", SCREENSHOT, GATEWAY_URL=e2e_gateway.url, TOKEN=e2e_gateway.token("1001")
    )


def test_portal_home_runs_with_the_token_from_the_headers_tab(session: dict[str, Any]) -> None:
    assert session["title"] == "portal-gateway · GraphiQL"
    assert "query PortalHome" in session["preloadedQuery"]
    headers = json.loads(session["headersEditor"])
    assert headers["Authorization"].startswith("Bearer ey")

    runs = [r for r in session["graphqlResponses"] if r["operationName"] == "PortalHome"]
    assert len(runs) == 1
    assert runs[0]["status"] == 200
    assert runs[0]["authorization"] == headers["Authorization"]

    result = session["result"]
    assert "errors" not in result
    me = result["data"]["me"]
    assert me["name"] == "Ada Lovelace"
    assert me["invoices"]["totalCount"] == 12
    assert len(me["invoices"]["edges"]) == 10
    assert me["tickets"]["totalCount"] == 12
    assert all(
        e["node"]["downloadUrl"].startswith("http://127.0.0.1:") for e in me["files"]["edges"]
    )
    # and it is on screen, not only in the editor's model
    on_screen = session["resultOnScreen"].replace("\u00a0", " ")
    assert '"name": "Ada Lovelace"' in on_screen


def test_every_request_of_the_page_stays_on_127_0_0_1(session: dict[str, Any]) -> None:
    assert session["external"] == []
    hosts = {urlsplit(url).hostname for url in session["requests"]}
    assert hosts == {"127.0.0.1"}
    paths = {urlsplit(url).path for url in session["requests"]}
    assert "/static/graphiql/graphiql.min.js" in paths
    assert session["pageErrors"] == []


def test_a_screenshot_of_the_answer_is_kept(session: dict[str, Any]) -> None:
    screenshot = Path(session["screenshot"])
    assert screenshot.name == SCREENSHOT
    assert_rendered(screenshot)


def test_the_docs_explorer_works_before_a_token_is_set(session: dict[str, Any]) -> None:
    first = next(r for r in session["graphqlResponses"] if r["introspection"])
    assert first["status"] == 200
    assert "query: Query" in session["docsBeforeToken"]
