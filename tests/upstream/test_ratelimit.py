"""RateLimiter, run once against Redis and once in-process: the same sliding-window promise."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from gateway.redis_client import RedisClient, by_slot, connect
from gateway.settings import RateLimit
from gateway.upstream import RateLimiter, SlotUnavailable
from gateway.upstream.ratelimit import LATENCY_MARGIN
from tests.servers import free_port

pytestmark = pytest.mark.single_and_cluster

WINDOW = 1.0 + LATENCY_MARGIN

MakeLimiter = Callable[..., RateLimiter]


@pytest.fixture(params=["redis", "redis-cluster", "memory"])
async def make_limiter(
    request: pytest.FixtureRequest, cache_prefix: str
) -> AsyncIterator[MakeLimiter]:
    """Limiters whose log lives in Redis or in the process: make_limiter(calls, per, ...)."""
    client: RedisClient | None = None
    if request.param == "redis":
        client = connect(request.getfixturevalue("redis_url"))
    elif request.param == "redis-cluster":
        client = connect(request.getfixturevalue("redis_cluster_url"))

    def make(calls: int, per: float, **options: float) -> RateLimiter:
        key = f"{cache_prefix}ratelimit:{uuid.uuid4().hex[:8]}"
        return RateLimiter("unit", RateLimit(calls, per), key=key, redis=client, **options)

    yield make
    if client is not None:
        await client.aclose()


async def test_a_burst_up_to_the_limit_goes_at_once(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(3, 1.0)
    assert [await limiter.reserve(max_wait=5) for _ in range(3)] == [0.0, 0.0, 0.0]


async def test_calls_beyond_the_limit_wait_for_the_window(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(3, 1.0)
    for _ in range(3):
        await limiter.reserve(max_wait=5)
    fourth = await limiter.reserve(max_wait=5)
    seventh = [await limiter.reserve(max_wait=5) for _ in range(3)][-1]
    assert WINDOW - 0.1 < fourth <= WINDOW
    assert 2 * WINDOW - 0.1 < seventh <= 2 * WINDOW


async def test_a_slot_too_far_away_is_refused_and_not_reserved(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(3, 1.0)
    for _ in range(3):
        await limiter.reserve(max_wait=5)
    with pytest.raises(SlotUnavailable) as caught:
        await limiter.reserve(max_wait=0.2)
    assert WINDOW - 0.1 < caught.value.wait <= WINDOW
    # The refused caller took nothing: the next one still gets the first free slot.
    assert await limiter.reserve(max_wait=5) <= WINDOW


async def test_slots_free_up_as_the_window_passes(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(2, 0.2, margin=0.0)
    assert [await limiter.reserve(max_wait=1) for _ in range(2)] == [0.0, 0.0]
    await asyncio.sleep(0.25)
    assert await limiter.reserve(max_wait=1) == 0.0


async def test_redis_log_expires_with_its_window(redis_url: str, cache_prefix: str) -> None:
    client = connect(redis_url)
    try:
        key = f"{cache_prefix}ratelimit:ttl"
        limiter = RateLimiter("ttl", RateLimit(5, 2.0), key=key, redis=client)
        await limiter.reserve(max_wait=1)
        ttl_ms = await client.pttl(key)
        assert 0 < ttl_ms <= 2000 + LATENCY_MARGIN * 1000 + 1
        assert limiter.shared is True
    finally:
        await client.aclose()


async def _start_redis(binary: str, port: int, workdir: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        binary,
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        *("--dir", workdir),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    for _ in range(500):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return process
    process.terminate()
    await process.wait()
    raise RuntimeError(f"redis-server did not listen on {port}")


async def test_unreachable_redis_falls_back_once_and_recovers(
    cache_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    now = [0.0]
    key = f"{cache_prefix}ratelimit:recover"
    client: Redis = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    limiter = RateLimiter(
        "recover", RateLimit(2, 10.0), key=key, redis=client, clock=lambda: now[0]
    )
    workdir = tempfile.mkdtemp(prefix="pg-redis-")
    try:
        with caplog.at_level(logging.INFO, logger="gateway.upstream"):
            assert await limiter.reserve(max_wait=1) == 0.0  # nothing listens: in-process
            assert await limiter.reserve(max_wait=1) == 0.0
            assert limiter.shared is False
            with pytest.raises(SlotUnavailable):
                await limiter.reserve(max_wait=1)  # the in-process log keeps the limit

            server = await _start_redis(binary, port, workdir)
            try:
                now[0] += 60  # past the pause after a failure: Redis is tried again
                assert await limiter.reserve(max_wait=1) == 0.0
                assert limiter.shared is True
                assert await client.zcard(key) == 1
            finally:
                server.terminate()
                await server.wait()
    finally:
        await client.aclose()
        shutil.rmtree(workdir, ignore_errors=True)

    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.upstream"]
    assert sum("falls back" in m for m in messages) == 1
    assert sum("shared through Redis again" in m for m in messages) == 1


def test_a_limit_must_allow_a_call() -> None:
    with pytest.raises(ValueError, match="at least one call"):
        RateLimiter("zero", RateLimit(0, 1.0), key="k")


async def test_concurrent_callers_share_one_round_trip(redis_url: str, cache_prefix: str) -> None:
    """Callers of one event-loop turn are served by one script call, in order, each still
    with its own wait and its own refusal."""
    client = connect(redis_url)
    try:
        limiter = RateLimiter(
            "unit", RateLimit(5, 1.0), key=f"{cache_prefix}ratelimit:batch", redis=client
        )
        calls = _count_script_calls(limiter)
        results = await asyncio.gather(
            *(limiter.reserve(max_wait=5 if n < 8 else 0.5) for n in range(10)),
            return_exceptions=True,
        )
        assert len(calls) == 1
        assert results[:5] == [0.0] * 5  # the burst the limit allows
        assert all(WINDOW - 0.1 < w <= WINDOW for w in results[5:8])  # type: ignore[operator]
        assert all(isinstance(r, SlotUnavailable) for r in results[8:])  # too far for them
        assert await client.zcard(f"{cache_prefix}ratelimit:batch") == 8  # refused: not kept
    finally:
        await client.delete(f"{cache_prefix}ratelimit:batch")
        await client.aclose()


def _count_script_calls(limiter: RateLimiter) -> list[int]:
    """Counts the script calls of the limiter's Redis (one element per call)."""
    logs = limiter._logs
    assert logs is not None
    script = logs.script
    calls: list[int] = []

    async def counted(**kwargs: object) -> object:
        calls.append(1)
        return await script(**kwargs)  # type: ignore[arg-type]

    logs.script = counted  # type: ignore[assignment]
    return calls


async def test_providers_of_one_turn_share_one_round_trip(
    redis_url: str, cache_prefix: str
) -> None:
    """A page's billing and help-desk calls leave together: their reservations travel in
    one script call, each against its own provider's log and limit."""
    client = connect(redis_url)
    keys = [f"{cache_prefix}ratelimit:one", f"{cache_prefix}ratelimit:two"]
    try:
        one = RateLimiter("one", RateLimit(2, 1.0), key=keys[0], redis=client)
        two = RateLimiter("two", RateLimit(3, 1.0), key=keys[1], redis=client)
        calls = _count_script_calls(one)
        waits = await asyncio.gather(
            *(one.reserve(max_wait=5) for _ in range(3)),
            *(two.reserve(max_wait=5) for _ in range(4)),
        )
        assert len(calls) == len(by_slot(((key, None) for key in keys), client))  # 1 on a node
        # each its own limit: one lets 2 go at once, two lets 3
        assert waits[:2] == [0.0, 0.0]
        assert WINDOW - 0.1 < waits[2] <= WINDOW
        assert waits[3:6] == [0.0] * 3
        assert WINDOW - 0.1 < waits[6] <= WINDOW
        assert [await client.zcard(key) for key in keys] == [3, 4]
        assert one.shared
        assert two.shared
    finally:
        await client.delete(*keys)
        await client.aclose()
