"""Shared fixtures: a real Redis, isolated key prefixes, settings for a test gateway."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.servers import redis_server

def _reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL if set, else 127.0.0.1:6379, else a redis-server started for the session."""
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if _reachable(url):
        yield url
        return
    with redis_server() as (private_url, _process, _port):
        yield private_url


@pytest.fixture
def cache_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"pgtest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def dev_secret() -> str:
    return "test-dev-secret-" + "x" * 24

