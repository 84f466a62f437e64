"""Graceful shutdown: SIGTERM lets in-flight requests finish within SHUTDOWN_GRACE, then the
lifespan closes provider clients and Redis pools."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.app import create_app
from gateway.auth import mint_dev_token
from gateway.settings import Settings
from gateway.upstream import UpstreamClient
from tests.servers import ServerThread, gateway_process, redis_server, serve
from tests.upstream.fake_provider import FakeProvider

SECRET = "dev-secret-for-shutdown-tests-0123456789"
# two provider round trips: the customer, then their invoices
QUERY = "{ me { id name invoices(first: 3) { totalCount } } }"


class _InFlight(threading.Thread):
    """One /graphql request in a thread; `result` is the response or the exception."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.result: httpx.Response | Exception | None = None
        self.finished_at = 0.0

    def run(self) -> None:
        try:
            self.result = httpx.post(
                f"{self.url}/graphql",
                json={"query": QUERY},
                headers={"Authorization": f"Bearer {mint_dev_token(SECRET, '1001')}"},
                timeout=30,
            )
        except httpx.HTTPError as error:
            self.result = error
        self.finished_at = time.monotonic()


def _start_and_terminate(gateway: Any, wait: float = 0.6) -> tuple[_InFlight, float]:
    request = _InFlight(gateway.url)
    request.start()
    time.sleep(wait)  # the request is inside the sandbox's first simulated provider call
    gateway.process.send_signal(signal.SIGTERM)
    return request, time.monotonic()


def test_an_in_flight_request_completes_after_sigterm(tmp_path: Path) -> None:
    env = {"AUTH_DEV_SECRET": SECRET, "SANDBOX_LATENCY_MS": "1500"}
    with gateway_process(tmp_path, env) as gateway:
        request, terminated = _start_and_terminate(gateway)
        time.sleep(0.4)
        # no new connections once the signal arrived
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{gateway.url}/healthz", timeout=2)
        request.join(15)
        gateway.process.wait(15)
        exited = time.monotonic()
        stderr = gateway.stderr

    assert isinstance(request.result, httpx.Response), request.result
    assert request.result.status_code == 200
    body = request.result.json()
    assert "errors" not in body
    assert body["data"]["me"]["invoices"]["totalCount"] == 12
    assert request.finished_at > terminated + 1.5  # it really was in flight at SIGTERM
    assert exited - terminated < 8
    assert "Waiting for application shutdown." in stderr
    assert "Application shutdown complete." in stderr
    levels = {json.loads(line)["level"] for line in stderr.splitlines() if line.startswith("{")}
    assert "error" not in levels


def test_requests_still_running_after_the_grace_period_are_cut_off(tmp_path: Path) -> None:
    env = {"AUTH_DEV_SECRET": SECRET, "SANDBOX_LATENCY_MS": "3000", "SHUTDOWN_GRACE": "1"}
    with gateway_process(tmp_path, env) as gateway:
        request, terminated = _start_and_terminate(gateway, wait=0.3)
        gateway.process.wait(15)
        exited = time.monotonic()
        request.join(15)
        stderr = gateway.stderr

    # the query needs ~6 s; the grace of 1 s ends it, and the process goes on to exit
    assert exited - terminated < 4
    assert not isinstance(request.result, httpx.Response) or request.result.status_code != 200
    assert "Application shutdown complete." in stderr


def test_serve_bounds_slow_clients_and_a_half_sent_body_does_not_hold_sigterm(
    tmp_path: Path,
) -> None:
    """`portal-gateway serve` runs with the server options of gateway.server: headers that
    never complete are cut off, and at SIGTERM a request still waiting for its body is
    answered 408 at HTTP_BODY_TIMEOUT instead of holding the process for SHUTDOWN_GRACE and
    ending in a 500 with a traceback."""
    env = {
        "AUTH_DEV_SECRET": SECRET,
        "HTTP_HEADER_TIMEOUT": "0.5",
        "HTTP_BODY_TIMEOUT": "1",
        "SHUTDOWN_GRACE": "20",
    }
    with gateway_process(tmp_path, env) as gateway:
        port = int(gateway.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=3) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            assert slow.recv(100) == b""  # closed at the header deadline, nothing answered

        half = socket.create_connection(("127.0.0.1", port), timeout=10)
        half.sendall(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"query": '
        )
        time.sleep(0.2)  # the request is in the app, waiting for the rest of its body
        gateway.process.send_signal(signal.SIGTERM)
        terminated = time.monotonic()
        gateway.process.wait(15)
        exited = time.monotonic()
        answer = half.recv(65536)
        half.close()
        stderr = gateway.stderr

    assert exited - terminated < 5
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert b"connection: close" in answer.lower()
    assert "Traceback" not in stderr
    levels = {json.loads(line)["level"] for line in stderr.splitlines() if line.startswith("{")}
    assert "error" not in levels


class _ClosingBilling:
    """The sandbox billing adapter plus an UpstreamClient of its own, closed by aclose()
    the way a provider adapter closes its client."""

    name = "sandbox-billing"

    def __init__(self, inner: Any, client: UpstreamClient) -> None:
        self._inner = inner
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def invoice_pages(self, queries: Sequence[Any]) -> Any:
        await self.client.request("GET", "/v1/invoices", operation="invoices.list")
        return await self._inner.invoice_pages(queries)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self._inner.aclose()


def _gateway_clients(client: redis.Redis, own_id: int) -> list[dict[str, Any]]:
    return [c for c in client.client_list() if int(c["id"]) != own_id]


def test_stopping_closes_redis_pools_and_provider_clients(
    make_settings: Callable[..., Settings],
) -> None:
    provider = FakeProvider()
    with redis_server() as (url, _process, _port), serve(provider.app) as fake:
        probe = redis.Redis.from_url(url)
        own_id = int(probe.client_id())
        settings = make_settings(redis_url=url)
        server = ServerThread(create_app(settings), port=settings.port).start()
        stopped = False
        try:
            gateway = server.server.config.app.state.gateway

            async def make_client() -> UpstreamClient:
                return UpstreamClient(
                    "stripe",
                    base_url=fake.url,
                    settings=settings,
                    redis=gateway.services.backend.client,
                )

            billing = _ClosingBilling(gateway.services.sources.billing, server.call(make_client()))
            gateway.services.sources.billing = billing
            token = mint_dev_token(settings.dev_secret() or "", "1001")
            response = httpx.post(
                f"{server.url}/graphql",
                json={"query": QUERY},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200
            assert "errors" not in response.json()
            assert provider.count() == 1
            assert _gateway_clients(probe, own_id), "the gateway holds Redis connections"
            assert not billing.client.closed

            server.stop()
            stopped = True
            assert billing.client.closed
            deadline = time.monotonic() + 5
            while _gateway_clients(probe, own_id) and time.monotonic() < deadline:
                time.sleep(0.05)  # Redis notices closed sockets on its next event-loop turn
            assert _gateway_clients(probe, own_id) == []
        finally:
            if not stopped:
                server.stop()
            probe.close()
