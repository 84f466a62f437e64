"""Fixtures for the event tests: moto's AWS server, RabbitMQ, per-test SQS queues."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import boto3
import pytest
from moto.server import ThreadedMotoServer

from gateway.settings import Settings
from tests.conftest import GatewayServer
from tests.events.clients import gateways
from tests.servers import free_port

REGION = "us-east-1"


@pytest.fixture(scope="session")
def aws_credentials() -> Iterator[None]:
    """Fake credentials, so boto3 never looks further (or at a real account)."""
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION
    )
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def moto_url(aws_credentials: None) -> Iterator[str]:
    """moto's server (SQS, SES) on a free port, for the whole session."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def sqs_queues(moto_url: str) -> Iterator[tuple[str, str]]:
    """A queue and its dead-letter queue of this test's own: (url, dead-letter url)."""
    client = boto3.client("sqs", region_name=REGION, endpoint_url=moto_url)
    name = f"pgtest-{uuid.uuid4().hex[:10]}"
    queue = client.create_queue(QueueName=name)["QueueUrl"]
    dead = client.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
    try:
        yield queue, dead
    finally:
        client.delete_queue(QueueUrl=queue)
        client.delete_queue(QueueUrl=dead)
        client.close()


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """RABBITMQ_URL if set, else the local broker (guest/guest); fails if none listens."""
    url = os.environ.get("RABBITMQ_URL") or "amqp://guest:guest@127.0.0.1:5672/"
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2).close()
    except OSError:
        pytest.fail(f"no RabbitMQ at {url}: start rabbitmq-server or set RABBITMQ_URL")
    return url


@pytest.fixture
def start_gateway(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., GatewayServer]]:
    """Start gateways under uvicorn (webhook secrets set; keyword arguments override)."""
    with gateways(make_settings) as start:
        yield start
