"""`me { files }`: the file page is loaded beside the CRM call, since it needs only the
customer id the token carries (gateway/schema/prefetch.py), and only when really asked."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway

PAGE = """query($first: Int, $skipFiles: Boolean = false) { me {
  name
  ...Docs @skip(if: $skipFiles)
  tickets(first: 2) { totalCount }
} }
fragment Docs on Customer { files(first: $first) { totalCount edges { node { id } } } }"""


@pytest.fixture
def slow_server(make_settings: Callable[..., Settings]) -> Iterator[GatewayServer]:
    """Sandbox providers that each take 150 ms, with every source call's start and end."""
    settings = make_settings(sandbox_latency_ms=150, response_cache="off")
    with running_gateway(settings) as server:
        server.timeline = []  # type: ignore[attr-defined]
        for kind, method in (("crm", "customers"), ("files", "file_pages")):
            source = getattr(server.sources, kind)
            setattr(source, method, _recorded(server.timeline, kind, getattr(source, method)))  # type: ignore[attr-defined]
        yield server


def _recorded(timeline: list[tuple[str, str, float]], kind: str, call: Any) -> Any:
    async def recorded(keys: Any) -> Any:
        timeline.append((kind, "start", time.monotonic()))
        try:
            return await call(keys)
        finally:
            timeline.append((kind, "end", time.monotonic()))

    return recorded


def _at(timeline: list[tuple[str, str, float]], kind: str, edge: str) -> list[float]:
    return [at for k, e, at in timeline if (k, e) == (kind, edge)]


def test_files_are_fetched_beside_the_crm_call_once(slow_server: GatewayServer) -> None:
    body = slow_server.query(PAGE, {"first": 3}, token=slow_server.token("1001")).json()
    assert "errors" not in body, body
    assert len(body["data"]["me"]["files"]["edges"]) == 3
    timeline = slow_server.timeline  # type: ignore[attr-defined]
    [files_start] = _at(timeline, "files", "start")  # one call: the field found the prefetch
    [crm_end] = _at(timeline, "crm", "end")
    assert files_start < crm_end  # started before the customer was known, not after


def test_nothing_is_prefetched_that_the_query_skips_or_refuses(
    slow_server: GatewayServer,
) -> None:
    token = slow_server.token("1001")
    skipped = slow_server.query(PAGE, {"first": 3, "skipFiles": True}, token=token).json()
    assert "errors" not in skipped
    assert "files" not in skipped["data"]["me"]
    refused = slow_server.query(PAGE, {"first": -1}, token=token).json()
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert _at(slow_server.timeline, "files", "start") == []  # type: ignore[attr-defined]
    # staff asking about themselves have no customer id: nothing to prefetch either
    staff = slow_server.query(PAGE, {"first": 3}, token=slow_server.token(None, ["staff"])).json()
    assert staff["data"]["me"] is None
    assert _at(slow_server.timeline, "files", "start") == []  # type: ignore[attr-defined]
