"""A RedisCache over the test Redis, and a raw client to look at what it stored."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.cache.redis import RedisCache
from gateway.redis_client import RedisClient, connect


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[RedisCache]:
    backend = RedisCache(redis_url)
    yield backend
    await backend.aclose()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[RedisClient]:
    """A client of its own (one node or the cluster), to look at what RedisCache left."""
    client = connect(redis_url)
    yield client
    await client.aclose()
