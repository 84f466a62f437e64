"""The whole-response cache on real Redis: scoped per viewer, dropped by entity tags."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

from gateway.cache.redis import RedisCache
from gateway.cache.response import ResponseCache
from gateway.redis_client import blocking_client
from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway
from tests.events.clients import wait_for

pytestmark = pytest.mark.single_and_cluster

HOME = "{ me { id name invoices(first: 3) { edges { node { id status } } } } }"
ASK = {"cache": True}


@pytest.fixture
def server(
    make_settings: Callable[..., Settings], redis_url: str, cache_prefix: str
) -> Iterator[GatewayServer]:
    settings = make_settings(redis_url=redis_url, cache_prefix=cache_prefix)
    with running_gateway(settings) as gateway:
        yield gateway


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis | redis.RedisCluster]:
    client = blocking_client(redis_url)
    yield client
    client.close()


def ask(server: GatewayServer, query: str, **kwargs: object) -> dict[str, object]:
    headers = kwargs.pop("headers", {})
    token = kwargs.pop("token", None)
    if token:
        headers = {**headers, "Authorization": f"Bearer {token}"}  # type: ignore[dict-item]
    response = server.http.post(
        "/graphql", json={"query": query, "extensions": ASK, **kwargs}, headers=headers
    )
    return response.json()  # type: ignore[no-any-return]


def calls(server: GatewayServer) -> int:
    return sum(sum(getattr(server.sources, k).calls.values()) for k in ("crm", "billing"))


def test_second_request_is_a_hit_with_no_provider_call(server: GatewayServer) -> None:
    token = server.token("1001")
    first = ask(server, HOME, token=token)
    assert first["extensions"] == {"cache": {"hit": False, "age": 0.0}}
    before = calls(server)
    second = ask(server, HOME, token=token)
    assert second["extensions"]["cache"]["hit"] is True  # type: ignore[index]
    assert second["data"] == first["data"]
    assert calls(server) == before


def test_a_page_is_never_served_to_another_viewer(server: GatewayServer) -> None:
    a = ask(server, HOME, token=server.token("1001"))
    assert a["data"]["me"]["id"] == "1001"  # type: ignore[index]
    b = ask(server, HOME, token=server.token("1002"))
    assert b["extensions"]["cache"]["hit"] is False  # type: ignore[index]
    assert b["data"]["me"]["id"] == "1002"  # type: ignore[index]
    anonymous = ask(server, HOME)
    assert anonymous["data"] == {"me": None}
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"  # type: ignore[index]
    staff = ask(server, HOME, token=server.token(None, ["staff"]))
    assert staff["data"] == {"me": None}
    assert staff["extensions"]["cache"]["hit"] is False  # type: ignore[index]
    staff_view = '{ customer(id: "1001") { id name } }'
    assert ask(server, staff_view, token=server.token(None, ["staff"]))["data"]["customer"]  # type: ignore[index]
    as_b = ask(server, staff_view, token=server.token("1002"))
    assert as_b["data"] == {"customer": None}
    assert as_b["errors"][0]["extensions"]["code"] == "NOT_FOUND"  # type: ignore[index]


def test_entries_expire_at_the_smallest_ttl_touched(
    server: GatewayServer, store: redis.Redis | redis.RedisCluster, cache_prefix: str
) -> None:
    token = server.token("1001")
    ttls = {}
    for name, query in {
        "crm": "{ me { name } }",
        "billing": "{ me { name invoices { totalCount } } }",
        "files": "{ me { name invoices { totalCount } files { totalCount } } }",
    }.items():
        ask(server, query, token=token)

        def stored() -> set[bytes]:  # written just after the answer went out
            return set(store.scan_iter(match=f"{cache_prefix}resp:*")) - set(ttls.values())

        wait_for(stored, timeout=5)
        [key] = stored()
        ttls[name] = key
    assert 295 <= store.ttl(ttls["crm"]) <= 300
    assert 55 <= store.ttl(ttls["billing"]) <= 60
    assert 25 <= store.ttl(ttls["files"]) <= 30


def test_dropping_an_invoice_tag_drops_only_pages_holding_it(
    server: GatewayServer, store: redis.Redis | redis.RedisCluster, cache_prefix: str
) -> None:
    a, b = server.token("1001"), server.token("1002")
    page_a = ask(server, HOME, token=a)
    ask(server, HOME, token=b)
    profile_a = "{ me { name } }"
    ask(server, profile_a, token=a)
    invoice = page_a["data"]["me"]["invoices"]["edges"][0]["node"]["id"]  # type: ignore[index]
    assert store.exists(f"{cache_prefix}tag:billing:cus_sbx0001")
    dropped = server.server.call(server.gateway.services.cache.drop_tags(["billing:cus_sbx0001"]))
    assert dropped > 0
    assert ask(server, HOME, token=a)["extensions"]["cache"]["hit"] is False  # type: ignore[index]
    assert ask(server, HOME, token=b)["extensions"]["cache"]["hit"] is True  # type: ignore[index]
    # the profile page never touched billing: it stays
    assert ask(server, profile_a, token=a)["extensions"]["cache"]["hit"] is True  # type: ignore[index]
    assert invoice.startswith("in_sbx0001")


def test_update_profile_is_visible_on_the_next_read(server: GatewayServer) -> None:
    token = server.token("1001")
    ask(server, "{ me { name company } }", token=token)
    changed = ask(
        server,
        'mutation { updateProfile(input: {company: "New Co"}) { company } }',
        token=token,
    )
    assert changed["data"] == {"updateProfile": {"company": "New Co"}}
    again = ask(server, "{ me { name company } }", token=token)
    assert again["data"]["me"]["company"] == "New Co"  # type: ignore[index]
    assert again["extensions"]["cache"]["hit"] is False  # type: ignore[index]


def test_create_ticket_drops_the_ticket_pages(server: GatewayServer) -> None:
    token = server.token("1001")
    query = "{ me { tickets { totalCount } } }"
    assert ask(server, query, token=token)["data"]["me"]["tickets"]["totalCount"] == 12  # type: ignore[index]
    ask(
        server,
        'mutation { createTicket(input: {subject: "s", description: "d"}) { ticket { id } } }',
        token=token,
    )
    assert ask(server, query, token=token)["data"]["me"]["tickets"]["totalCount"] == 13  # type: ignore[index]


def test_partial_failure_is_never_cached(
    server: GatewayServer, store: redis.Redis | redis.RedisCluster, cache_prefix: str
) -> None:
    token = server.token("1003")
    server.sources.billing.fail = True
    skipped = _skips()
    failed = ask(server, HOME, token=token)
    assert failed["data"]["me"]["invoices"] is None  # type: ignore[index]
    assert _skips() == skipped + 1  # decided before the answer went out: nothing to write
    assert not list(store.scan_iter(match=f"{cache_prefix}resp:*"))
    server.sources.billing.fail = False
    healed = ask(server, HOME, token=token)
    assert healed["data"]["me"]["invoices"] is not None  # type: ignore[index]
    assert "errors" not in healed


def test_no_cache_header_bypasses_and_refreshes(server: GatewayServer) -> None:
    token = server.token("1001")
    ask(server, HOME, token=token)
    before = server.sources.crm.calls["customers"]
    bypass = ask(server, HOME, token=token, headers={"Cache-Control": "no-cache"})
    assert bypass["extensions"]["cache"]["hit"] is False  # type: ignore[index]
    assert REGISTRY.get_sample_value("gateway_response_cache_total", {"result": "bypass"})
    # the entity cache still answers; the response entry is rewritten
    assert server.sources.crm.calls["customers"] == before
    assert ask(server, HOME, token=token)["extensions"]["cache"]["hit"] is True  # type: ignore[index]


def test_get_answers_etag_and_304(server: GatewayServer) -> None:
    headers = {"Authorization": f"Bearer {server.token('1001')}"}
    first = server.http.get("/graphql", params={"query": HOME}, headers=headers)
    etag = first.headers["etag"]
    second = server.http.get(
        "/graphql", params={"query": HOME}, headers={**headers, "If-None-Match": etag}
    )
    assert second.status_code == 304
    assert second.content == b""
    other = server.http.get(
        "/graphql", params={"query": HOME}, headers={**headers, "If-None-Match": '"nope"'}
    )
    assert other.status_code == 200
    assert other.json() == first.json()


def test_mutations_are_never_cached(
    server: GatewayServer, store: redis.Redis | redis.RedisCluster, cache_prefix: str
) -> None:
    token = server.token("1001")
    mutation = (
        'mutation { createTicket(input: {subject: "s", description: "d"}) { ticket { id } } }'
    )
    one = ask(server, mutation, token=token)
    two = ask(server, mutation, token=token)
    assert one["data"] != two["data"]
    # entries are written just after the answer: a query's entry landing shows that the
    # mutations', had there been any, landed before it
    ask(server, HOME, token=token)
    wait_for(lambda: list(store.scan_iter(match=f"{cache_prefix}resp:*")), timeout=5)
    assert len(list(store.scan_iter(match=f"{cache_prefix}resp:*"))) == 1


def test_response_cache_off(
    make_settings: Callable[..., Settings], redis_url: str, cache_prefix: str
) -> None:
    settings = make_settings(redis_url=redis_url, cache_prefix=cache_prefix, response_cache="off")
    with running_gateway(settings) as server:
        token = server.token("1001")
        ask(server, HOME, token=token)
        second = ask(server, HOME, token=token)
        assert second["extensions"]["cache"]["hit"] is False  # type: ignore[index]


def test_a_page_read_before_a_purge_is_not_kept_after_it(
    make_settings: Callable[..., Settings], redis_url: str, cache_prefix: str
) -> None:
    """A webhook purges while a page is being read from slow providers: the page answers,
    but its (maybe outdated) copy must not be what the next request finds."""
    settings = make_settings(redis_url=redis_url, cache_prefix=cache_prefix, sandbox_latency_ms=300)
    with running_gateway(settings) as server:
        token = server.token("1001")
        with ThreadPoolExecutor(1) as pool:
            reading = pool.submit(ask, server, HOME, token=token)
            time.sleep(0.1)  # the page's provider reads are in flight
            server.server.call(server.gateway.services.cache.drop_tags(["customer:1001"]))
            assert reading.result()["extensions"] == {"cache": {"hit": False, "age": 0.0}}
        assert ask(server, HOME, token=token)["extensions"]["cache"]["hit"] is False  # type: ignore[index]
        assert ask(server, HOME, token=token)["extensions"]["cache"]["hit"] is True  # type: ignore[index]


def _skips() -> float:
    return REGISTRY.get_sample_value("gateway_response_cache_total", {"result": "skip"}) or 0.0


async def test_an_entry_on_its_way_is_read_from_the_process(
    redis_url: str, cache_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry is stored after its answer went out; until the write lands, a lookup in
    this process finds it there (the client asking again at once gets a hit)."""
    backend = RedisCache(redis_url)
    gate = asyncio.Event()
    write = backend.set_many

    async def slow_set_many(*args: Any) -> None:
        await gate.wait()
        await write(*args)

    monkeypatch.setattr(backend, "set_many", slow_set_many)
    responses = ResponseCache(backend, prefix=cache_prefix, ttls={"crm": 300}, max_bytes=1000)
    key = responses.key("1001", "doc", None, None)
    entry = responses.entry(b'{"data":{}}', ["crm"])
    assert entry is not None
    try:
        storing = asyncio.create_task(responses.store(key, entry, ["customer:1001"]))
        await asyncio.sleep(0.01)
        assert await responses.get(key) is None  # not in Redis yet
        assert responses.landing(key) is entry
        gate.set()
        await storing
        assert responses.landing(key) is None
        stored = await responses.get(key)
        assert stored is not None
        assert (stored.body, stored.etag) == (entry.body, entry.etag)
    finally:
        await backend.delete([key, f"{cache_prefix}tag:customer:1001"])
        await backend.aclose()
