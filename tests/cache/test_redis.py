"""RedisCache against a real Redis: round trips, TTLs, tags, NX, outages; EntityCache over it."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import msgspec
import pytest
import redis.asyncio
from prometheus_client import REGISTRY
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from gateway.cache.codec import Codec
from gateway.cache.entity import DeferredWrites, EntityCache, StaleHit, deferred_writes
from gateway.cache.redis import RedisCache
from gateway.errors import IntegrationUnavailable
from gateway.redis_client import RedisClient, cluster_url, connect, is_cluster
from tests.cache.redis_process import redis_on_port
from tests.conftest import DATA_CIPHER
from tests.servers import free_port, redis_server

pytestmark = pytest.mark.single_and_cluster

RETRY = 0.3  # retry_interval of the outage tests: short, yet far longer than a skipped call


class Profile(msgspec.Struct, frozen=True):
    id: str
    name: str


class ProfileWithEmail(msgspec.Struct, frozen=True):
    id: str
    name: str
    email: str | None = None


PROFILE = Codec[Profile](Profile)


class CountingFetch:
    """A provider stand-in: records each batch it is asked for, answers or raises."""

    def __init__(self, *, delay: float = 0.0, error: Exception | None = None) -> None:
        self.calls: list[list[str]] = []
        self.delay = delay
        self.error = error

    async def __call__(self, ids: list[str]) -> list[Profile]:
        self.calls.append(list(ids))
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return [Profile(id=id, name=f"Customer {id}") for id in ids]


def cache_errors(operation: str) -> float:
    return REGISTRY.get_sample_value("gateway_cache_errors_total", {"operation": operation}) or 0.0


def assert_ttl_near(pttl_ms: int, seconds: int) -> None:
    # A few seconds of slack for a slow machine; a missing TTL (-1) or key (-2) fails.
    assert seconds * 1000 - 5000 <= pttl_ms <= seconds * 1000


@pytest.fixture
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes], int]]:
    """A redis-server of this test alone: one it may stop, or whose command counts it reads."""
    with redis_server() as server:
        yield server


@pytest.fixture
def entities(cache: RedisCache, cache_prefix: str) -> EntityCache:
    return EntityCache(
        cache,
        prefix=cache_prefix,
        ttls={"crm": 300, "billing": 60, "helpdesk": 60, "files": 30},
        stale_ttl=3600,
        cipher=DATA_CIPHER,
    )


# -- the backend ---------------------------------------------------------------------------


async def test_set_many_then_get_many_answers_values_in_key_order_with_their_ttls(
    cache: RedisCache, raw: RedisClient, cache_prefix: str
) -> None:
    long, short, absent = (cache_prefix + name for name in ("long", "short", "absent"))
    await cache.set_many([(long, b"\x00one", 300), (short, b"two", 60)], {})

    assert await cache.get_many([short, absent, long]) == [b"two", None, b"\x00one"]
    assert_ttl_near(await raw.pttl(long), 300)
    assert_ttl_near(await raw.pttl(short), 60)
    assert cache.status == "ok"


async def test_get_many_is_one_mget_and_set_many_one_command_per_entry_and_tag(
    private_redis: tuple[str, subprocess.Popen[bytes], int],
) -> None:
    url = private_redis[0]
    cache = RedisCache(url)
    observer: RedisClient = redis.asyncio.Redis.from_url(url)
    try:
        keys = [f"pg:crm:customer:{n}" for n in range(100)]
        await observer.config_resetstat()
        await cache.set_many(
            [(key, b"v", 300) for key in keys], {"pg:tag:even": keys[::2], "pg:tag:odd": keys[1::2]}
        )
        assert await cache.get_many(keys) == [b"v"] * 100

        stats = await observer.info("commandstats")
        assert stats["cmdstat_mget"]["calls"] == 1
        assert "cmdstat_get" not in stats
        assert stats["cmdstat_set"]["calls"] == 100
        assert stats["cmdstat_sadd"]["calls"] == 2
        assert stats["cmdstat_expire"]["calls"] == 4
    finally:
        await observer.aclose()
        await cache.aclose()


async def test_reads_of_one_event_loop_turn_share_one_mget(
    private_redis: tuple[str, subprocess.Popen[bytes], int],
) -> None:
    """Loaders of one request (and of other requests in flight) that read in the same
    event-loop turn cost one round trip, each still answered its own keys in order."""
    url = private_redis[0]
    cache = RedisCache(url)
    observer: RedisClient = redis.asyncio.Redis.from_url(url)
    try:
        await cache.set_many([(f"pg:k{n}", f"v{n}".encode(), 300) for n in range(6)], {})
        await observer.config_resetstat()

        answers = await asyncio.gather(
            cache.get_many(["pg:k0", "pg:k1"]),
            cache.get_many(["pg:k5", "pg:absent", "pg:k2"]),
            cache.get_many(["pg:k1"]),  # the same key as another reader: both get it
        )

        assert answers == [[b"v0", b"v1"], [b"v5", None, b"v2"], [b"v1"]]
        assert (await observer.info("commandstats"))["cmdstat_mget"]["calls"] == 1
        # a read of a later turn is a round trip of its own
        assert await cache.get_many(["pg:k3"]) == [b"v3"]
        assert (await observer.info("commandstats"))["cmdstat_mget"]["calls"] == 2
    finally:
        await observer.aclose()
        await cache.aclose()


async def test_reads_of_one_turn_on_a_cluster_are_one_mget_per_slot(
    redis_cluster_url: str,
) -> None:
    """On a cluster the turn's reads go out as one MGET per slot (the MGETs of one node in
    one pipeline), each reader still answered its own keys in order."""
    prefix = f"pgtest:{uuid.uuid4().hex[:8]}"
    cache = RedisCache(redis_cluster_url)
    cluster = connect(redis_cluster_url)
    assert isinstance(cluster, RedisCluster)
    await cluster.initialize()  # learns the nodes
    primaries = [redis.asyncio.Redis(host=n.host, port=n.port) for n in cluster.get_primaries()]
    keys = {f"{{{prefix}:{group}}}:{n}": f"{group}{n}".encode() for group in "abc" for n in "12"}
    try:
        await cache.set_many([(key, value, 60) for key, value in keys.items()], {})
        for node in primaries:
            await node.config_resetstat()
        a1, a2, b1, c2 = (f"{{{prefix}:{k[0]}}}:{k[1]}" for k in ("a1", "a2", "b1", "c2"))
        answers = await asyncio.gather(
            cache.get_many([a1, b1]),
            cache.get_many([c2, f"{{{prefix}:a}}:absent", a2]),
        )
        assert answers == [[b"a1", b"b1"], [b"c2", None, b"a2"]]
        mgets = 0
        for node in primaries:
            stats = await node.info("commandstats")
            mgets += stats.get("cmdstat_mget", {}).get("calls", 0)
        assert mgets == 3  # slots of {a}, {b}, {c}: one MGET each, not one per reader
    finally:
        await cluster.delete(*keys)
        for node in primaries:
            await node.aclose()
        await cluster.aclose()
        await cache.aclose()


async def test_drop_tags_deletes_exactly_the_keys_of_that_tag_and_its_set(
    cache: RedisCache, raw: RedisClient, cache_prefix: str
) -> None:
    a, b, gone, c, untagged = (cache_prefix + f"crm:customer:{n}" for n in "abxcu")
    tag_1, tag_2 = cache_prefix + "tag:customer:1", cache_prefix + "tag:customer:2"
    await cache.set_many(
        [(key, b"v", 300) for key in (a, b, gone, c, untagged)],
        {tag_1: [a, b, gone], tag_2: [c]},
    )
    await cache.delete([gone])  # expired or invalidated since: not counted as dropped

    assert await cache.drop_tags([tag_1]) == 2
    assert await cache.get_many([a, b, c, untagged]) == [None, None, b"v", b"v"]
    assert await raw.exists(tag_1) == 0
    assert await raw.smembers(tag_2) == {c.encode()}
    assert await cache.drop_tags([tag_1]) == 0


async def test_drop_tags_handles_a_tag_with_more_members_than_lua_can_unpack_at_once(
    cache: RedisCache, cache_prefix: str
) -> None:
    keys = [f"{cache_prefix}files:list:{n}" for n in range(10_000)]
    tag = cache_prefix + "tag:big"
    await cache.set_many([(key, b"v", 60) for key in keys], {tag: keys})

    assert await cache.drop_tags([tag]) == 10_000
    assert await cache.get_many(keys[::1000]) == [None] * 10


async def test_tag_sets_expire_with_their_longest_lived_member(
    cache: RedisCache, raw: RedisClient, cache_prefix: str
) -> None:
    tag = cache_prefix + "tag:customer:1"
    fresh, stale = cache_prefix + "crm:customer:1", cache_prefix + "crm:customer:1:stale"
    await cache.set_many([(fresh, b"v", 300), (stale, b"v", 3600)], {tag: [fresh]})
    assert_ttl_near(await raw.pttl(tag), 300)  # only `fresh` was tagged

    await cache.set_many([(fresh, b"v", 300), (stale, b"v", 3600)], {tag: [fresh, stale]})
    assert_ttl_near(await raw.pttl(tag), 3600)

    await cache.set_many([(cache_prefix + "files:x", b"v", 30)], {tag: [cache_prefix + "files:x"]})
    assert_ttl_near(await raw.pttl(tag), 3600)  # a shorter-lived member never shortens it
    assert await raw.scard(tag) == 3


async def test_add_sets_a_key_only_when_absent(
    cache: RedisCache, raw: RedisClient, cache_prefix: str
) -> None:
    key = cache_prefix + "webhook:stripe:evt_1"

    assert await cache.add(key, b"first", 604_800) is True
    assert await cache.add(key, b"second", 604_800) is False
    assert await cache.get_many([key]) == [b"first"]
    assert_ttl_near(await raw.pttl(key), 604_800)


async def test_delete_removes_only_the_keys_given(cache: RedisCache, cache_prefix: str) -> None:
    keys = [cache_prefix + name for name in ("a", "b", "c")]
    await cache.set_many([(key, b"v", 60) for key in keys], {})

    await cache.delete(keys[:2])

    assert await cache.get_many(keys) == [None, None, b"v"]


async def test_aclose_leaves_a_client_passed_in_open_for_its_owner(redis_url: str) -> None:
    client: RedisClient = connect(redis_url)
    try:
        cache = RedisCache(redis_url, client=client)
        assert cache.client is client
        assert await cache.ping() is True
        await cache.aclose()
        assert await client.ping() is True
    finally:
        await client.aclose()


# -- Redis trouble ---------------------------------------------------------------------------

Call = Callable[[RedisCache], Awaitable[object]]


@pytest.mark.parametrize(
    ("operation", "call", "fallback"),
    [
        ("get_many", lambda c: c.get_many(["pg:a", "pg:b"]), [None, None]),
        ("set_many", lambda c: c.set_many([("pg:a", b"v", 60)], {"pg:tag:t": ["pg:a"]}), None),
        ("add", lambda c: c.add("pg:webhook:evt", b"1", 60), True),
        ("delete", lambda c: c.delete(["pg:a"]), None),
        ("drop_tags", lambda c: c.drop_tags(["pg:tag:t"]), 0),
        ("ping", lambda c: c.ping(), False),
    ],
)
async def test_each_operation_answers_its_fallback_when_redis_is_unreachable(
    operation: str, call: Call, fallback: object
) -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    before = cache_errors(operation)
    try:
        assert await call(cache) == fallback
        assert cache.status == "degraded"
        assert cache_errors(operation) == before + 1
    finally:
        await cache.aclose()


async def test_outage_answers_misses_fast_then_caching_resumes_when_redis_returns(
    private_redis: tuple[str, subprocess.Popen[bytes], int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, process, port = private_redis
    cache = RedisCache(url, retry_interval=RETRY)
    entities = EntityCache(
        cache, prefix="pg:", ttls={"crm": 300}, stale_ttl=3600, cipher=DATA_CIPHER
    )
    fetch = CountingFetch()
    try:
        await cache.set_many([("pg:k", b"before", 300)], {})
        assert await cache.get_many(["pg:k"]) == [b"before"]
        assert await cache.drop_tags(["pg:tag:none"]) == 0
        errors = cache_errors("get_many")

        process.terminate()
        process.wait(10)
        with caplog.at_level(logging.INFO, logger="gateway.cache.redis"):
            started = time.monotonic()
            assert await cache.get_many(["pg:k", "pg:j"]) == [None, None]
            assert time.monotonic() - started < 1
            assert cache.status == "degraded"
            assert cache_errors("get_many") == errors + 1

            # Within retry_interval Redis is not even tried: instant, and no new error.
            started = time.monotonic()
            for _ in range(20):
                assert await cache.get_many(["pg:k"]) == [None]
                await cache.set_many([("pg:k", b"during", 300)], {"pg:tag:t": ["pg:k"]})
            assert time.monotonic() - started < 0.1
            assert cache_errors("get_many") == errors + 1

            # Requests are still answered, from the provider.
            for _ in range(2):
                assert await entities.load_many("crm", "customer", ["1"], fetch, PROFILE) == [
                    Profile("1", "Customer 1")
                ]
            assert fetch.calls == [["1"], ["1"]]

            await asyncio.sleep(RETRY)
            assert await cache.get_many(["pg:k"]) == [None]  # tried again: still down
            assert cache_errors("get_many") == errors + 2

            with redis_on_port(port):
                await asyncio.sleep(RETRY)
                await cache.set_many([("pg:k", b"after", 300)], {})
                assert cache.status == "ok"
                assert await cache.get_many(["pg:k"]) == [b"after"]
                await entities.load_many("crm", "customer", ["1"], fetch, PROFILE)
                await entities.load_many("crm", "customer", ["1"], fetch, PROFILE)
                assert len(fetch.calls) == 3  # cached again after the first load
                # The drop_tags script is gone with the old process; it is loaded again.
                await cache.set_many([("pg:t1", b"v", 60)], {"pg:tag:t": ["pg:t1"]})
                assert await cache.drop_tags(["pg:tag:t"]) == 1

        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        recoveries = [r for r in caplog.records if r.levelno == logging.INFO]
        assert len(warnings) == 1  # one per transition, not one per failed call
        assert len(recoveries) == 1
    finally:
        await cache.aclose()


async def test_a_hung_redis_costs_a_call_at_most_the_socket_timeout(
    private_redis: tuple[str, subprocess.Popen[bytes], int],
) -> None:
    url, process, _port = private_redis
    cache = RedisCache(url, socket_timeout=0.25, retry_interval=RETRY)
    try:
        await cache.set_many([("pg:k", b"v", 300)], {})
        process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            assert await cache.get_many(["pg:k"]) == [None]
            assert time.monotonic() - started < 1
            assert cache.status == "degraded"
        finally:
            process.send_signal(signal.SIGCONT)

        await asyncio.sleep(RETRY)
        assert await cache.get_many(["pg:k"]) == [b"v"]
        assert cache.status == "ok"
    finally:
        await cache.aclose()


async def test_ping_probes_redis_even_while_calls_are_skipped(
    private_redis: tuple[str, subprocess.Popen[bytes], int],
) -> None:
    url, process, port = private_redis
    cache = RedisCache(url, retry_interval=60)
    try:
        assert await cache.ping() is True
        process.terminate()
        process.wait(10)
        assert await cache.ping() is False
        assert cache.status == "degraded"

        with redis_on_port(port):
            assert await cache.ping() is True  # long before retry_interval is over
            assert cache.status == "ok"
            assert await cache.add("pg:k", b"v", 60) is True
            assert await cache.get_many(["pg:k"]) == [b"v"]
    finally:
        await cache.aclose()


# -- EntityCache over Redis ------------------------------------------------------------------


async def test_entity_cache_serves_a_second_load_from_redis_with_the_kind_ttl(
    entities: EntityCache, raw: RedisClient, cache_prefix: str
) -> None:
    fetch = CountingFetch()
    first = await entities.load_many("crm", "customer", ["1", "2"], fetch, PROFILE)
    second = await entities.load_many("crm", "customer", ["2", "1"], fetch, PROFILE)

    assert fetch.calls == [["1", "2"]]
    assert first == [Profile("1", "Customer 1"), Profile("2", "Customer 2")]
    assert second == first[::-1]
    assert_ttl_near(await raw.pttl(f"{cache_prefix}crm:customer:1"), 300)
    assert_ttl_near(await raw.pttl(f"{cache_prefix}crm:customer:1:stale"), 3600)


async def test_entity_cache_fetches_a_cold_key_once_for_50_concurrent_loads(
    entities: EntityCache,
) -> None:
    fetch = CountingFetch(delay=0.05)

    results = await asyncio.gather(
        *(entities.load_many("crm", "customer", ["7"], fetch, PROFILE) for _ in range(50))
    )

    assert fetch.calls == [["7"]]
    assert all(result == [Profile("7", "Customer 7")] for result in results)


async def test_entity_cache_answers_the_stale_copy_when_the_provider_fails(
    entities: EntityCache, raw: RedisClient, cache_prefix: str
) -> None:
    await entities.load_many("crm", "customer", ["1"], CountingFetch(), PROFILE)
    await raw.delete(f"{cache_prefix}crm:customer:1")  # as if its 300 s had run out
    failing = CountingFetch(error=IntegrationUnavailable("hubspot"))
    stale: list[StaleHit] = []

    result = await entities.load_many("crm", "customer", ["1", "2"], failing, PROFILE, stale=stale)

    assert failing.calls == [["1", "2"]]
    assert result[0] == Profile("1", "Customer 1")
    assert isinstance(result[1], IntegrationUnavailable)
    assert [hit.id for hit in stale] == ["1"]
    assert 0 <= stale[0].age < 60


async def test_entity_cache_reads_a_value_of_another_model_version_as_a_miss(
    entities: EntityCache,
) -> None:
    await entities.load_many("crm", "customer", ["1"], CountingFetch(), PROFILE)
    newer = Codec[ProfileWithEmail](ProfileWithEmail)
    calls: list[list[str]] = []

    async def fetch_newer(ids: list[str]) -> Sequence[ProfileWithEmail]:
        calls.append(ids)
        return [ProfileWithEmail(id, f"Customer {id}", f"{id}@example.com") for id in ids]

    result = await entities.load_many("crm", "customer", ["1"], fetch_newer, newer)

    assert calls == [["1"]]
    assert result == [ProfileWithEmail("1", "Customer 1", "1@example.com")]


async def test_entity_cache_drop_tags_forgets_only_that_customers_entries(
    entities: EntityCache,
) -> None:
    fetch = CountingFetch()

    def by_customer(id: str, _value: Profile) -> list[str]:
        return [f"customer:{id}"]

    await entities.load_many("crm", "customer", ["1", "2"], fetch, PROFILE, tags=by_customer)

    assert await entities.drop_tags(["customer:1"]) == 2  # the fresh key and its stale copy
    await entities.load_many("crm", "customer", ["1", "2"], fetch, PROFILE, tags=by_customer)
    assert fetch.calls == [["1", "2"], ["1"]]


def by_customer(id: str, _value: Profile) -> list[str]:
    return [f"customer:{id}"]


async def test_a_read_in_flight_during_a_purge_is_not_cached_after_it(
    entities: EntityCache,
) -> None:
    """The provider answered before a webhook's purge, the fill would land after it: the
    old answer must not outlive the purge."""
    slow = CountingFetch(delay=0.2)
    reading = asyncio.create_task(
        entities.load_many("crm", "customer", ["1"], slow, PROFILE, tags=by_customer)
    )
    await asyncio.sleep(0.05)  # the provider call is in flight
    await entities.drop_tags(["customer:1"])
    [answer] = await reading
    assert answer == Profile(id="1", name="Customer 1")  # the reader still gets its answer

    again = CountingFetch()
    await entities.load_many("crm", "customer", ["1"], again, PROFILE, tags=by_customer)
    assert again.calls == [["1"]]  # nothing was cached: read from the provider again
    await entities.load_many("crm", "customer", ["1"], again, PROFILE, tags=by_customer)
    assert again.calls == [["1"]]  # a read after the purge is cached as usual


async def test_a_purge_waits_for_a_fill_already_on_its_way(
    entities: EntityCache, cache: RedisCache, cache_prefix: str
) -> None:
    """A fill that passed its purged_since check before the purge began is written before
    the purge runs, so the purge drops it (rather than the fill landing after the purge)."""
    gate = asyncio.Event()
    key = entities.key("crm", "customer", "1")

    async def slow_write() -> None:
        await gate.wait()  # e.g. waiting for a pooled connection
        await cache.set_many([(key, b"old", 300)], {entities.tag_key("customer:1"): [key]})

    assert not entities.purged_since(entities.purges, ["customer:1"])
    writing = entities.guarded(slow_write())
    await asyncio.sleep(0.01)
    purging = asyncio.create_task(entities.drop_tags(["customer:1"]))
    await asyncio.sleep(0.05)
    assert not purging.done()  # it waits for the write on its way
    gate.set()
    await writing
    assert await purging == 1
    assert await cache.get_many([key]) == [None]


async def load_in_a_request(
    entities: EntityCache, fetch: CountingFetch
) -> tuple[DeferredWrites, list[Any]]:
    """Customer 1 loaded as the GraphQL endpoint loads it: its fills held for the request
    (not released: the test decides when its answer is out)."""
    held = DeferredWrites()
    token = deferred_writes.set(held)
    try:
        values = await entities.load_many(
            "crm", "customer", ["1"], fetch, PROFILE, tags=by_customer
        )
    finally:
        deferred_writes.reset(token)
    return held, values


async def test_a_read_while_a_fill_lands_gets_the_value_not_a_provider_call(
    entities: EntityCache, cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fills are written just after the answer goes out: a read in the meantime (the
    client asking again at once, on another pooled connection) is served from the fill."""
    gate = asyncio.Event()
    write = cache.set_many

    async def slow_set_many(*args: Any) -> None:
        await gate.wait()  # e.g. waiting for a pooled connection
        await write(*args)

    monkeypatch.setattr(cache, "set_many", slow_set_many)
    first = CountingFetch()
    held, [_value] = await load_in_a_request(entities, first)
    [landing] = held.tasks
    held.release()
    assert not landing.done()
    again = CountingFetch()
    [value] = await entities.load_many("crm", "customer", ["1"], again, PROFILE)
    assert value == Profile(id="1", name="Customer 1")
    assert again.calls == []
    gate.set()
    await landing
    assert entities._landing == {}  # landed: read from Redis from now on
    assert await entities.load_many("crm", "customer", ["1"], again, PROFILE) == [value]
    assert again.calls == []


async def test_a_requests_fills_are_held_until_it_releases_them(
    entities: EntityCache, cache: RedisCache
) -> None:
    """Fills of a request start only once its answer is out (release); meanwhile their
    values are read as cached, and nothing is in Redis yet."""
    fetch = CountingFetch()
    held, [value] = await load_in_a_request(entities, fetch)
    [write] = held.tasks
    await asyncio.sleep(0.05)
    assert not write.done()
    key = entities.key("crm", "customer", "1")
    assert await cache.get_many([key]) == [None]
    assert await entities.load_many("crm", "customer", ["1"], fetch, PROFILE) == [value]
    assert fetch.calls == [["1"]]
    held.release()
    await write
    assert await cache.get_many([key]) != [None]
    assert entities._landing == {}


async def test_a_purge_releases_held_fills_and_drops_them(
    entities: EntityCache, cache: RedisCache
) -> None:
    """A purge does not wait for a request's answer: it starts that request's held fills,
    waits for them, then drops what they wrote."""
    fetch = CountingFetch()
    held, _values = await load_in_a_request(entities, fetch)
    [write] = held.tasks
    assert await asyncio.wait_for(entities.drop_tags(["customer:1"]), 5) == 2  # and :stale
    assert write.done()
    assert write.exception() is None
    key = entities.key("crm", "customer", "1")
    assert await cache.get_many([key, key + ":stale"]) == [None, None]
    await entities.load_many("crm", "customer", ["1"], fetch, PROFILE)
    assert fetch.calls == [["1"], ["1"]]


async def test_a_purge_runs_again_after_settle_for_other_replicas_fills(
    cache: RedisCache, cache_prefix: str
) -> None:
    """Another replica's read, in flight during the purge, writes its old answer after it;
    the repeated purge removes it."""
    here = EntityCache(
        cache,
        prefix=cache_prefix,
        ttls={"crm": 300},
        stale_ttl=3600,
        settle=0.3,
        cipher=DATA_CIPHER,
    )
    there = EntityCache(
        cache, prefix=cache_prefix, ttls={"crm": 300}, stale_ttl=3600, cipher=DATA_CIPHER
    )
    fetch = CountingFetch()

    await here.drop_tags(["customer:1"])
    await there.load_many("crm", "customer", ["1"], fetch, PROFILE, tags=by_customer)
    await there.load_many("crm", "customer", ["1"], fetch, PROFILE, tags=by_customer)
    assert fetch.calls == [["1"]]  # the late fill is cached for now
    await asyncio.sleep(0.5)
    await there.load_many("crm", "customer", ["1"], fetch, PROFILE, tags=by_customer)
    assert fetch.calls == [["1"], ["1"]]  # the repeated purge dropped it


async def test_closing_runs_the_waiting_purges_at_once(
    cache: RedisCache, cache_prefix: str
) -> None:
    entities = EntityCache(
        cache,
        prefix=cache_prefix,
        ttls={"crm": 300},
        stale_ttl=3600,
        settle=3600,
        cipher=DATA_CIPHER,
    )
    fetch = CountingFetch()
    await entities.drop_tags(["customer:1"])
    await entities.load_many("crm", "customer", ["1"], fetch, PROFILE, tags=by_customer)
    await entities.aclose()  # a shutdown does not wait an hour, nor forget the purge
    await entities.load_many("crm", "customer", ["1"], fetch, PROFILE, tags=by_customer)
    assert fetch.calls == [["1"], ["1"]]


async def test_a_purge_of_other_tags_during_a_read_leaves_its_fill_alone(
    entities: EntityCache,
) -> None:
    """A burst of webhooks about other customers must not keep every read uncached."""
    slow = CountingFetch(delay=0.2)
    reading = asyncio.create_task(
        entities.load_many("crm", "customer", ["1"], slow, PROFILE, tags=by_customer)
    )
    await asyncio.sleep(0.05)
    await entities.drop_tags(["customer:2"])
    await entities.drop_tags(["billing:cus_2", "invoice:in_2"])
    await reading

    await entities.load_many("crm", "customer", ["1"], slow, PROFILE, tags=by_customer)
    assert slow.calls == [["1"]]  # the fill was written: the second load was a hit


async def test_purged_since_remembers_a_bounded_number_of_purges(entities: EntityCache) -> None:
    async def purge(count: int) -> None:
        for n in range(count):
            await entities.drop_tags([f"customer:{n}"])

    mark = entities.purges
    await purge(3)
    assert entities.purged_since(mark, ["customer:1"])
    assert not entities.purged_since(mark, ["customer:9"])
    assert not entities.purged_since(entities.purges, ["customer:1"])
    await purge(1100)  # more than are kept: the old mark can no longer be judged
    assert entities.purged_since(mark, ["customer:1099"])
    assert entities.purged_since(mark, ["customer:5000"])


# -- the connection pool (redis-py's BlockingConnectionPool) ------------------------------


async def test_a_pooled_connection_redis_closed_is_replaced_before_use(
    cache: RedisCache, raw: RedisClient, cache_prefix: str
) -> None:
    """The pool checks an idle connection before use: one Redis closed meanwhile (a
    restart, a CLIENT KILL, an idle timeout) is reconnected, and the read is a hit."""
    if is_cluster(cache.client):
        pytest.skip("redis-py's cluster pools do not check idle connections (design 11)")
    key = f"{cache_prefix}pool"
    await cache.set_many([(key, b"kept", 60)], {})
    pooled = await cache.client.client_id()
    assert await cache.client.client_id() == pooled  # sequential calls share one connection
    assert await raw.client_kill_filter(_id=pooled) == 1
    await asyncio.sleep(0.05)  # the close reaches the pooled socket

    assert await cache.get_many([key]) == [b"kept"]
    assert cache.status == "ok"
    assert await cache.client.client_id() != pooled


async def test_callers_waiting_for_a_full_pool_are_all_served(
    redis_url: str, cache_prefix: str
) -> None:
    """Two connections for forty concurrent reads: callers wait for a free connection
    (within the socket timeout) rather than fail, and every one is served."""
    if cluster_url(redis_url):
        pytest.skip("redis-py's cluster pools raise when full rather than wait (design 11)")
    cache = RedisCache(redis_url, max_connections=2, socket_timeout=5)
    try:
        key = f"{cache_prefix}pool-full"
        await cache.set_many([(key, b"v", 60)], {})
        reads = [cache.client.get(key) for _ in range(40)]
        assert await asyncio.gather(*reads) == [b"v"] * 40
        assert cache.status == "ok"
        assert await cache.get_many([key]) == [b"v"]  # and the pool works after it
    finally:
        await cache.aclose()


async def test_fills_released_together_go_out_as_one_command(
    entities: EntityCache,
    cache: RedisCache,
    raw: RedisClient,
    cache_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request's held fills (a hundred on a cold staff page) start together when its
    answer is out, and share one command (the set-many script): each keeps its own TTLs
    and tags. On a cluster, one script call per slot, each with the keys of its slot only,
    all in one pipeline (one round trip per node)."""
    pipelines = 0
    slots: list[set[int]] = []

    def counting(send: Any) -> Any:
        def counted(sha: str, numkeys: int, *keys_and_args: Any) -> Any:
            slots.append({key_slot(key.encode()) for key in keys_and_args[:numkeys]})
            return send(sha, numkeys, *keys_and_args)

        return counted

    if is_cluster(cache.client):
        make_pipeline = cache.client.pipeline

        def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
            nonlocal pipelines
            pipelines += 1
            pipe = make_pipeline(*args, **kwargs)
            pipe.evalsha = counting(pipe.evalsha)  # type: ignore[method-assign]
            return pipe

        monkeypatch.setattr(cache.client, "pipeline", counted_pipeline)
    else:
        monkeypatch.setattr(cache.client, "evalsha", counting(cache.client.evalsha))
    held = DeferredWrites()
    token = deferred_writes.set(held)
    try:
        for kind, ids in (("crm", ["1", "2"]), ("billing", ["3"]), ("files", ["4", "5"])):
            await entities.load_many(kind, "thing", ids, CountingFetch(), PROFILE, tags=by_customer)
    finally:
        deferred_writes.reset(token)
    assert slots == []  # held until the answer is out
    pipelines = 0  # the reads' (mget_nonatomic pipelines its MGETs) are not counted
    held.release()
    await asyncio.gather(*held.tasks)

    if is_cluster(cache.client):
        assert pipelines == 1
        assert all(len(slot) == 1 for slot in slots)
        assert len({slot.pop() for slot in slots}) == len(slots) > 1
    else:
        assert len(slots) == 1
    for kind, id, ttl in (
        ("crm", "1", 300),
        ("crm", "2", 300),
        ("billing", "3", 60),
        ("files", "5", 30),
    ):
        assert_ttl_near(await raw.pttl(entities.key(kind, "thing", id)), ttl)
    assert await raw.smembers(entities.tag_key("customer:4")) == {
        entities.key("files", "thing", "4").encode(),
        entities.key("files", "thing", "4").encode() + b":stale",
    }
