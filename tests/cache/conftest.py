"""A RedisCache over the test Redis, and a raw client to look at what it stored."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from gateway.cache.redis import RedisCache


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[RedisCache]:
    backend = RedisCache(redis_url)
    yield backend
    await backend.aclose()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis[bytes]]:
    """A client of its own, to look at what RedisCache left in Redis."""
    client: redis.asyncio.Redis[bytes] = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()
