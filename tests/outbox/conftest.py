"""Fixtures of the outbox tests: the fake HubSpot and Zendesk, a gateway on real Redis
whose help desk and CRM are those fakes, and the settings a worker of the same deployment
runs with."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.settings import Settings
from tests.conftest import DATA_KEY, GatewayServer, running_gateway
from tests.events.clients import _Sink, smtp_sink
from tests.events.conftest import rabbitmq_url  # noqa: F401 (one test runs on RabbitMQ)
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.zendesk import FakeZendesk

# the fakes as the HubSpot/Zendesk gateway tests start them; Zendesk's traffic is checked
# against its OpenAPI spec here too
from tests.sources.test_hubspot_zendesk_gateway import (  # noqa: F401
    hubspot,
    providers,
    zendesk,
)

REDELIVERY = 1.0  # EVENTS_REDELIVERY_TIMEOUT of these tests, seconds


@pytest.fixture
def sink() -> Iterator[tuple[str, _Sink]]:
    with smtp_sink() as running:
        yield running


@pytest.fixture
def deployment(
    hubspot: FakeHubSpot,  # noqa: F811 (the fixture imported above)
    zendesk: FakeZendesk,  # noqa: F811
    redis_url: str,
    cache_prefix: str,
    sink: tuple[str, _Sink],
) -> dict[str, Any]:
    """The settings every process of one deployment shares (gateway and workers)."""
    return {
        "crm_source": "hubspot",
        "hubspot_api_base": hubspot.url,
        "hubspot_access_token": hubspot.token,
        "helpdesk_source": "zendesk",
        "zendesk_base_url": zendesk.url,
        "zendesk_email": zendesk.email,
        "zendesk_api_token": zendesk.token,
        "redis_url": redis_url,
        "cache_prefix": cache_prefix,
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.05,
        "upstream_timeout": 2.0,
        "breaker_reset": 0.5,  # a gateway whose breaker opened while Zendesk was down tries again
        "events_redelivery_timeout": REDELIVERY,
        "outbox_retry_base": 0.05,
        "outbox_retry_max": 0.2,
        "notify_backend": "smtp",
        "smtp_url": sink[0],
    }


@pytest.fixture
def gateway(
    make_settings: Callable[..., Settings], deployment: dict[str, Any]
) -> Iterator[GatewayServer]:
    with running_gateway(make_settings(**deployment)) as server:
        yield server


def environment(deployment: dict[str, Any], **more: Any) -> dict[str, str]:
    """The deployment as environment variables, for `portal-gateway` subprocesses."""
    values = {**deployment, "data_encryption_keys": DATA_KEY, "worker_metrics_port": 0, **more}
    return {name.upper(): str(value) for name, value in values.items()}
