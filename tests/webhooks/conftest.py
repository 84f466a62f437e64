"""A sandbox gateway with every provider's webhook secret set, and metric readers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from prometheus_client import REGISTRY

from gateway.settings import Settings
from tests.conftest import GatewayServer
from tests.events.clients import gateways


def webhooks_total(provider: str, outcome: str) -> float:
    labels = {"provider": provider, "outcome": outcome}
    return REGISTRY.get_sample_value("gateway_webhooks_total", labels) or 0.0


def published_total(kind: str | None = None) -> float:
    if kind is not None:
        return REGISTRY.get_sample_value("gateway_events_published_total", {"type": kind}) or 0.0
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "gateway_events_published"
        for sample in metric.samples
        if sample.name == "gateway_events_published_total"
    )


@pytest.fixture
def start_gateway(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., GatewayServer]]:
    with gateways(make_settings) as start:
        yield start


@pytest.fixture
def hooks(start_gateway: Callable[..., GatewayServer]) -> GatewayServer:
    """The embedded default (memory cache and bus, in-process worker, log notifications)."""
    return start_gateway()
