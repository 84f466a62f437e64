"""GraphiQL is served from the gateway itself: no external URL, every asset answers; in
production only where GATEWAY_GRAPHIQL=true."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway


def test_graphiql_page_references_only_local_assets(gateway_server: GatewayServer) -> None:
    page = gateway_server.http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "://" not in html, "the page must not reference any external URL"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) == 5
    for asset in assets:
        assert asset.startswith("/static/graphiql/")
        response = gateway_server.http.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 500


def test_graphiql_start_script_targets_this_gateway(gateway_server: GatewayServer) -> None:
    script = gateway_server.http.get("/static/graphiql/start.js").text
    assert "window.location.origin + '/graphql'" in script
    assert "http" not in script.replace("window.location", "")


def test_api_clients_get_json_not_the_page(gateway_server: GatewayServer) -> None:
    response = gateway_server.http.get(
        "/graphql", headers={"Accept": "application/json", "Apollo-Require-Preflight": "1"}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


GRAPHIQL_SWITCH = {
    "development": ("development", None, True),
    "development, GATEWAY_GRAPHIQL=false": ("development", False, False),
    "production": ("production", None, False),
    "production, GATEWAY_GRAPHIQL=true": ("production", True, True),
}


@pytest.mark.parametrize("case", list(GRAPHIQL_SWITCH))
def test_graphiql_is_served_in_development_and_not_in_production_unless_set(
    case: str,
    make_settings: Callable[..., Settings],
    make_production_settings: Callable[..., Settings],
) -> None:
    env, switch, served = GRAPHIQL_SWITCH[case]
    make = make_production_settings if env == "production" else make_settings
    with running_gateway(make(gateway_graphiql=switch)) as gateway:
        page = gateway.http.get("/graphql", headers={"Accept": "text/html"})
        asset = gateway.http.get("/static/graphiql/start.js")
        if served:
            assert page.status_code == 200
            assert "GraphiQL" in page.text
            assert asset.status_code == 200
            return
        # a browser gets what any client asking for no query gets
        plain = gateway.http.get("/graphql", headers={"Accept": "*/*"})
        assert page.status_code == plain.status_code == 400
        assert page.headers["content-type"] == "application/json"
        assert page.json() == plain.json()
        assert page.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
        assert "GraphiQL" not in page.text
        assert asset.status_code == 404
        assert "window.location" not in asset.text
