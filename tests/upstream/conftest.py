"""Fixtures for the upstream client: a fake provider on a real port, settings, clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway.redis_client import RedisClient, connect
from gateway.settings import Settings
from gateway.upstream import UpstreamClient
from tests.servers import serve
from tests.upstream.fake_provider import FakeProvider

# Fast retries so a test spends its time on the behaviour, not on backoff.
FAST = {
    "retry_max_attempts": 3,
    "retry_base_delay": 0.01,
    "retry_max_delay": 0.05,
    "upstream_timeout": 2.0,
    "breaker_failures": 5,
    "breaker_reset": 30.0,
}


def make_settings(**overrides: Any) -> Settings:
    """Settings from these values only: no .env file, FAST unless overridden."""
    return Settings(_env_file=None, **{**FAST, **overrides})  # type: ignore[call-arg]


def upstream_count(source: str, operation: str, outcome: str) -> float:
    """Current value of gateway_upstream_requests_total for these labels."""
    value = REGISTRY.get_sample_value(
        "gateway_upstream_requests_total",
        {"source": source, "operation": operation, "outcome": outcome},
    )
    return value or 0.0


def upstream_seconds_count(source: str, operation: str) -> float:
    """How many attempts gateway_upstream_seconds has timed for these labels."""
    value = REGISTRY.get_sample_value(
        "gateway_upstream_seconds_count", {"source": source, "operation": operation}
    )
    return value or 0.0


def breaker_gauge(source: str) -> float | None:
    return REGISTRY.get_sample_value("gateway_breaker_state", {"source": source})


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    with serve(fake.app, timeout_graceful_shutdown=2) as server:
        fake.url = server.url
        yield fake


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., UpstreamClient]]:
    """Build UpstreamClients (closed after the test): make_client(name, url, settings, ...)."""
    made: list[UpstreamClient] = []

    def make(
        name: str, base_url: str, settings: Settings | None = None, **options: Any
    ) -> UpstreamClient:
        client = UpstreamClient(
            name, base_url=base_url, settings=settings or make_settings(), **options
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[RedisClient]:
    client = connect(redis_url)
    yield client
    await client.aclose()
