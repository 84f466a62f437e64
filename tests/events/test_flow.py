"""The whole path on real processes: gateways under uvicorn sharing Redis, `portal-gateway
worker` subprocesses consuming Redis Streams, an SMTP server, WebSocket subscribers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.redis_client import blocking_client
from tests.conftest import DATA_KEY, GatewayServer
from tests.events.clients import (
    INVOICE_UPDATED,
    GraphQLSocket,
    _Sink,
    gateway_process,
    smtp_sink,
    wait_for,
    wait_for_async,
)
from tests.servers import free_port
from tests.webhooks import signing
from tests.webhooks.conftest import webhooks_total

pytestmark = pytest.mark.single_and_cluster

GROUP = "portal-gateway-worker"
REDELIVERY = 1.0  # EVENTS_REDELIVERY_TIMEOUT of these tests, seconds


@pytest.fixture
def sink() -> Iterator[tuple[str, _Sink]]:
    with smtp_sink() as running:
        yield running


@pytest.fixture
def shared(redis_url: str, cache_prefix: str, dev_secret: str, tmp_path: Path) -> dict[str, str]:
    """The environment every process of one deployment shares."""
    return {
        "REDIS_URL": redis_url,
        "CACHE_PREFIX": cache_prefix,
        "AUTH_DEV_SECRET": dev_secret,
        "DATA_ENCRYPTION_KEYS": DATA_KEY,
        "STRIPE_WEBHOOK_SECRET": signing.STRIPE_SECRET,
        "SANDBOX_FILES_DIR": str(tmp_path / "files"),
        "EVENTS_REDELIVERY_TIMEOUT": str(REDELIVERY),
        "RETRY_BASE_DELAY": "0.05",
    }


@pytest.fixture
def redis_gateway(
    start_gateway: Callable[..., GatewayServer], redis_url: str, cache_prefix: str
) -> GatewayServer:
    return start_gateway(
        redis_url=redis_url, cache_prefix=cache_prefix, events_redelivery_timeout=REDELIVERY
    )


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis | redis.RedisCluster]:
    client = blocking_client(redis_url)
    yield client
    client.close()


def events_stream(cache_prefix: str, store: redis.Redis | redis.RedisCluster) -> str:
    """The stream's name: on a cluster one hash tag, so its dead letters share the slot."""
    name = f"{cache_prefix}events"
    return "{" + name + "}" if isinstance(store, redis.RedisCluster) else name


def worker_env(shared: dict[str, str], smtp_url: str) -> dict[str, str]:
    return {
        **shared,
        "NOTIFY_BACKEND": "smtp",
        "SMTP_URL": smtp_url,
        "WORKER_METRICS_PORT": str(free_port()),
    }


def stripe_paid(gateway: GatewayServer, event_id: str, invoice: dict[str, Any]) -> httpx.Response:
    body = signing.stripe_event(event_id, "invoice.paid", invoice)
    return gateway.http.post("/webhooks/stripe", content=body, headers=signing.stripe_headers(body))


def invoice_status(gateway: GatewayServer, invoice_id: str) -> str:
    query = "{ me { invoices(first: 12) { edges { node { id status } } } } }"
    edges = gateway.query(query, token=gateway.token("1001")).json()["data"]["me"]["invoices"]
    [status] = [e["node"]["status"] for e in edges["edges"] if e["node"]["id"] == invoice_id]
    return str(status)


async def test_invoice_paid_end_to_end_with_a_worker_process(
    redis_gateway: GatewayServer,
    shared: dict[str, str],
    sink: tuple[str, _Sink],
    store: redis.Redis | redis.RedisCluster,
    cache_prefix: str,
    tmp_path: Path,
) -> None:
    smtp_url, server = sink
    gateway = redis_gateway
    stream = events_stream(cache_prefix, store)
    env = worker_env(shared, smtp_url)
    with gateway_process(["worker"], env, tmp_path) as worker:
        assert invoice_status(gateway, "in_sbx0001002") == "OPEN"  # cached in Redis now
        # the entity cache is filled just after the answer goes out
        wait_for(lambda: set(store.scan_iter(match=f"{cache_prefix}*billing*")), timeout=5)
        cached = set(store.scan_iter(match=f"{cache_prefix}*billing*"))
        async with (
            GraphQLSocket.open(gateway.url, gateway.token("1001")) as ada,
            GraphQLSocket.open(gateway.url, gateway.token("1002")) as grace,
        ):
            await ada.subscribe("inv", INVOICE_UPDATED)
            await grace.subscribe("inv", INVOICE_UPDATED)

            forged = signing.stripe_event("evt_e2e")
            headers = signing.stripe_headers(forged, secret="whsec_forged")
            assert (
                gateway.http.post("/webhooks/stripe", content=forged, headers=headers).status_code
                == 400
            )
            assert store.xlen(stream) == 0  # nothing published
            assert set(store.scan_iter(match=f"{cache_prefix}*billing*")) == cached

            accepted = webhooks_total("stripe", "accepted")
            duplicates = webhooks_total("stripe", "duplicate")
            for _ in range(3):
                assert stripe_paid(gateway, "evt_e2e", signing.stripe_invoice()).status_code == 200
            assert webhooks_total("stripe", "accepted") == accepted + 1
            assert webhooks_total("stripe", "duplicate") == duplicates + 2
            assert invoice_status(gateway, "in_sbx0001002") == "PAID"  # at once

            payload = await ada.next_payload("inv")
            assert payload["data"]["invoiceUpdated"]["status"] == "PAID"
            await ada.assert_silent(0.2)  # one update, not three
            await grace.assert_silent(0.0)  # never another customer's event

        worker.wait_for_line("worker consuming")
        await wait_for_async(lambda: len(server.messages) == 1, within=10)
        [mail] = server.messages
        assert mail["To"] == "ada@example.com"
        assert mail["Subject"] == "Payment received for invoice SBX-0001-002"
        wait_for(lambda: store.xpending(stream, GROUP)["pending"] == 0)
        assert store.xlen(stream) == 1  # one event for three deliveries

        # the worker's own /metrics: the queue is drained, so its lag reads 0
        metrics_url = f"http://127.0.0.1:{env['WORKER_METRICS_PORT']}/metrics"

        def lag_sample() -> str:
            lines = httpx.get(metrics_url, timeout=5).text.splitlines()
            found = [
                x for x in lines if x.startswith('gateway_events_lag_seconds{backend="redis"}')
            ]
            return found[0] if found else ""

        wait_for(lambda: lag_sample().endswith(" 0.0"), timeout=20)
    assert len(server.messages) == 1


async def test_worker_killed_mid_message_redelivers_and_sends_once(
    redis_gateway: GatewayServer,
    shared: dict[str, str],
    sink: tuple[str, _Sink],
    store: redis.Redis | redis.RedisCluster,
    cache_prefix: str,
    tmp_path: Path,
) -> None:
    smtp_url, server = sink
    server.hold_next = True  # the first send blocks in the middle of SMTP DATA
    stream = events_stream(cache_prefix, store)
    # long enough that the survivor cannot take the message over before the kill
    env = {**worker_env(shared, smtp_url), "EVENTS_REDELIVERY_TIMEOUT": "2"}
    with (
        gateway_process(["worker"], env, tmp_path) as one,
        gateway_process(["worker"], {**env, "WORKER_METRICS_PORT": "0"}, tmp_path) as two,
    ):
        one.wait_for_line("worker consuming")
        two.wait_for_line("worker consuming")
        assert stripe_paid(redis_gateway, "evt_kill", signing.stripe_invoice()).status_code == 200
        wait_for(lambda: server.holding.is_set(), timeout=15)
        [holder] = store.xpending_range(stream, GROUP, "-", "+", 10)
        # a worker's consumer name ends with its pid
        pid = int(holder["consumer"].decode().rpartition("-")[2])
        doomed, survivor = (one, two) if one.process.pid == pid else (two, one)
        assert doomed.process.pid == pid
        doomed.kill()  # SIGKILL: no cleanup, no ack
        server.release.set()  # the dead worker's DATA is answered with a failure
        assert server.messages == []

        wait_for(lambda: len(server.messages) == 1, timeout=15)
        survivor.wait_for_line("took over a message")
        taken = [json.loads(line) for line in survivor.lines if "took over" in line]
        assert taken[0]["attempt"] == 2
        wait_for(lambda: store.xpending(stream, GROUP)["pending"] == 0)
    assert len(server.messages) == 1
    assert server.messages[0]["Subject"] == "Payment received for invoice SBX-0001-002"


async def test_two_gateway_processes_share_live_updates_per_customer(
    redis_gateway: GatewayServer, shared: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    with gateway_process(["serve", "--port", str(port)], shared, tmp_path):
        other_url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{other_url}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=20)
        async with (
            GraphQLSocket.open(other_url, redis_gateway.token("1001")) as ada,
            GraphQLSocket.open(other_url, redis_gateway.token("1002")) as grace,
        ):
            await ada.subscribe("inv", INVOICE_UPDATED)
            await grace.subscribe("inv", INVOICE_UPDATED)
            # taken in by this process, seen by the subscribers of the other one
            assert stripe_paid(redis_gateway, "evt_a", signing.stripe_invoice()).status_code == 200
            mine = (await ada.next_payload("inv"))["data"]["invoiceUpdated"]
            assert (mine["id"], mine["status"]) == ("in_sbx0001002", "PAID")
            await grace.assert_silent(0.3)

            theirs = signing.stripe_invoice("in_sbx0002001", "cus_sbx0002", total=1099)
            assert stripe_paid(redis_gateway, "evt_b", theirs).status_code == 200
            got = (await grace.next_payload("inv"))["data"]["invoiceUpdated"]
            assert (got["id"], got["status"]) == ("in_sbx0002001", "PAID")
            await ada.assert_silent(0.3)
