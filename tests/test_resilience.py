"""The whole gateway under cache trouble and concurrency: it keeps answering."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from gateway.settings import Settings
from tests.cache.redis_process import redis_on_port
from tests.conftest import running_gateway
from tests.servers import redis_server

HOME = "{ me { name invoices { totalCount } tickets { totalCount } } }"


def test_redis_stopped_mid_run_then_back(make_settings: Callable[..., Settings]) -> None:
    with redis_server() as (url, process, port):
        settings = make_settings(redis_url=url, response_cache="off")
        with running_gateway(settings) as server:
            token = server.token()
            assert server.query(HOME, token=token).json()["data"]["me"]["name"] == "Ada Lovelace"
            assert server.http.get("/readyz").json()["cache"] == "ok"
            crm = server.sources.crm.calls
            warm = crm["customers"]
            server.query(HOME, token=token)
            assert crm["customers"] == warm  # cached

            process.terminate()
            process.wait(10)
            started = time.monotonic()
            body = server.query(HOME, token=token).json()
            assert time.monotonic() - started < 2
            assert "errors" not in body
            assert body["data"]["me"]["invoices"]["totalCount"] == 12
            assert crm["customers"] == warm + 1  # answered by the provider
            ready = server.http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["cache"] == "degraded"
            assert ready.json()["status"] == "degraded"
            metrics = server.http.get("/metrics").text
            assert "gateway_cache_errors_total" in metrics

            with redis_on_port(port):
                deadline = time.monotonic() + 10
                while server.http.get("/readyz").json()["cache"] != "ok":
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
                time.sleep(1.1)  # past the backend's retry interval
                server.query(HOME, token=token)  # fills the cache again
                after = crm["customers"]
                server.query(HOME, token=token)
                assert crm["customers"] == after  # caching resumed


def test_fifty_concurrent_cold_requests_make_one_call_per_key(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(sandbox_latency_ms=100, response_cache="off")
    with running_gateway(settings) as server:
        token = server.token()

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            "/graphql",
                            json={"query": HOME},
                            headers={"Authorization": f"Bearer {token}"},
                        )
                        for _ in range(50)
                    )
                )

        responses = asyncio.run(burst())
        assert all(r.json()["data"]["me"]["name"] == "Ada Lovelace" for r in responses)
        assert server.sources.crm.calls["customers"] == 1
        assert server.sources.billing.calls["invoice_pages"] == 1
        assert server.sources.helpdesk.calls["ticket_pages"] == 1
