"""Shared fixtures: a real Redis, isolated key prefixes, settings for a test gateway."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.app import create_app
from gateway.auth import mint_dev_token
from gateway.encryption import DataCipher, generate_key
from gateway.observability import configure_logging
from gateway.redis_client import blocking_client
from gateway.server import uvicorn_options
from gateway.settings import Settings
from tests.cache.redis_process import redis_cluster
from tests.servers import ServerThread, free_port, redis_server, serve

# The data key of every test gateway (DATA_ENCRYPTION_KEYS), and its cipher for tests that
# look at what the gateway stored.
DATA_KEY = generate_key()
DATA_CIPHER = DataCipher.from_setting(DATA_KEY)
# for gateways a test configures itself: none writes a .dev-data-key into the checkout
os.environ["DATA_ENCRYPTION_KEYS"] = DATA_KEY


def _reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "single_and_cluster: run the module's tests on one Redis node and on a Redis Cluster",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked single_and_cluster that use `redis_url` run twice: once on the single
    node, once on the session's three-master cluster."""
    if "redis_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "single_and_cluster"
    ):
        metafunc.parametrize("redis_url", ["single", "cluster"], indirect=True)


@pytest.fixture(scope="session")
def single_redis_url() -> Iterator[str]:
    """REDIS_URL if set, else 127.0.0.1:6379, else a redis-server started for the session."""
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if _reachable(url):
        yield url
        return
    with redis_server() as (private_url, _process, _port):
        yield private_url


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A Redis Cluster (three masters, each with a replica) started for the session."""
    with redis_cluster() as cluster:
        yield cluster.url


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """The single node's URL; on a test marked single_and_cluster, each in turn."""
    kind = getattr(request, "param", "single")
    return str(
        request.getfixturevalue(f"{kind}_redis_url" if kind == "single" else "redis_cluster_url")
    )


@pytest.fixture
def cache_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"pgtest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = blocking_client(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def dev_secret() -> str:
    return "test-dev-secret-" + "x" * 24


@pytest.fixture
def make_settings(tmp_path: Path, dev_secret: str) -> Callable[..., Settings]:
    """Settings for a sandbox gateway on a free port; keyword arguments override fields."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "auth_dev_secret": dev_secret,
            "sandbox_files_dir": tmp_path / "files",
            "port": free_port(),
            "service_api_keys": ["test-service-key"],
            "data_encryption_keys": DATA_KEY,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def make_production_settings() -> Callable[..., Settings]:
    """Settings that GATEWAY_ENV=production accepts, on a free port; keyword arguments
    override fields. The real providers' adapters point at a port nobody listens on: what a
    test asks must not need them. Introspection is off; tokens are checked against
    AUTH_JWKS_URL (no JWKS there unless a test overrides it); `test-service-key` is a key."""

    def make(**overrides: Any) -> Settings:
        nowhere = f"http://127.0.0.1:{free_port()}"
        values: dict[str, Any] = {
            "gateway_env": "production",
            "port": free_port(),
            "gateway_introspection": False,
            "auth_jwks_url": f"{nowhere}/jwks.json",
            "auth_issuer": "https://issuer.test",
            "auth_audience": "portal",
            "service_api_keys": ["test-service-key"],
            "crm_source": "hubspot",
            "hubspot_api_base": nowhere,
            "hubspot_access_token": "pat-test",
            "hubspot_client_secret": "hubspot-test-secret",
            "billing_source": "stripe",
            "stripe_api_base": nowhere,
            "stripe_api_key": "sk_test_nowhere",
            "stripe_webhook_secret": "whsec_test",
            "helpdesk_source": "zendesk",
            "zendesk_base_url": nowhere,
            "zendesk_email": "portal@example.com",
            "zendesk_api_token": "zendesk-test-token",
            "zendesk_webhook_secret": "zendesk-test-secret",
            "files_source": "s3",
            "s3_bucket": "portal-files",
            "s3_endpoint_url": nowhere,
            "data_encryption_keys": DATA_KEY,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def capture_logs() -> Iterator[Callable[..., io.StringIO]]:
    """capture_logs(level, settings): the JSON log handler of configure_logging writing into
    a buffer, which is answered; the root logger is put back afterwards."""
    root = logging.getLogger()
    level = root.level
    httpx_level = logging.getLogger("httpx").level
    installed: list[logging.Handler] = []

    def capture(level: str = "DEBUG", settings: Settings | None = None) -> io.StringIO:
        others = root.handlers[:]
        buffer = io.StringIO()
        installed.append(configure_logging(level, settings, buffer))
        root.handlers.extend(others)  # pytest's own log capture goes on
        return buffer

    yield capture
    for handler in installed:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(httpx_level)


@contextlib.contextmanager
def running_gateway(settings: Settings) -> Iterator[GatewayServer]:
    """The whole gateway with `settings` under uvicorn on their port, until the block ends,
    served with the options `portal-gateway serve` uses (deadlines, proxies, shutdown)."""
    with serve(create_app(settings), **uvicorn_options(settings)) as server:
        running = GatewayServer(server, settings)
        try:
            yield running
        finally:
            running.http.close()


@pytest.fixture
def start(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., GatewayServer]]:
    """start(**overrides): a whole gateway with those settings, running until the test ends
    (as many as a test starts)."""
    with contextlib.ExitStack() as stack:

        def start(**overrides: Any) -> GatewayServer:
            return stack.enter_context(running_gateway(make_settings(**overrides)))

        yield start


@pytest.fixture
def gateway_server(make_settings: Callable[..., Settings]) -> Iterator[GatewayServer]:
    """The whole gateway under uvicorn on its configured port (sandbox providers)."""
    with running_gateway(make_settings()) as running:
        yield running


class GatewayServer:
    """A running gateway plus what tests need: its URL, its services, token minting, a client."""

    def __init__(self, server: ServerThread, settings: Settings) -> None:
        self.server = server
        self.settings = settings
        self.url = server.url
        app = server.server.config.app
        self.gateway = app.state.gateway
        self.http = httpx.Client(base_url=self.url, timeout=30)

    @property
    def sources(self) -> Any:
        return self.gateway.services.sources

    def token(self, customer_id: str | None = "1001", roles: list[str] | None = None) -> str:
        secret = self.settings.dev_secret()
        assert secret is not None
        return mint_dev_token(secret, customer_id, roles)

    def query(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        return self.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=all_headers
        )
