"""GraphiQL is served from the gateway itself: no external URL, every asset answers."""

from __future__ import annotations

import re

from tests.conftest import GatewayServer


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
