"""REDIS_URL to a client: one node or a cluster, hash tags, batches split by slot."""

from __future__ import annotations

import pydantic
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from gateway.redis_client import by_slot, cluster_url, connect, is_cluster, slot_group
from gateway.settings import Settings


def test_a_cluster_url_names_a_seed_node_in_plain_redis_form() -> None:
    assert cluster_url("redis://127.0.0.1:6379/0") is None
    assert cluster_url("redis+cluster://10.0.0.5:7000") == "redis://10.0.0.5:7000"
    assert cluster_url("rediss+cluster://u:p@cache.example:6380/0?ssl_cert_reqs=none") == (
        "rediss://u:p@cache.example:6380?ssl_cert_reqs=none"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://10.0.0.5:7000/2", "only database 0"),
        ("redis+cluster:///", "needs a host"),
    ],
)
def test_settings_refuse_a_cluster_url_that_cannot_work(url: str, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message) as raised:
        Settings(_env_file=None, redis_url=url)  # type: ignore[call-arg]
    assert "redis_url" in str(raised.value)


def test_settings_refuse_braces_in_the_prefix_of_a_cluster() -> None:
    with pytest.raises(pydantic.ValidationError, match="must not contain"):
        Settings(_env_file=None, redis_url="redis+cluster://h:1", cache_prefix="{pg}:")  # type: ignore[call-arg]
    # one node: braces are only characters
    Settings(_env_file=None, redis_url="redis://h:1", cache_prefix="{pg}:")  # type: ignore[call-arg]


async def test_one_node_keeps_names_and_batches_whole(single_redis_url: str) -> None:
    client = connect(single_redis_url)
    try:
        assert not is_cluster(client)
        assert slot_group("pg:events", client) == "pg:events"
        keys = [(f"pg:k{n}", n) for n in range(20)]
        assert by_slot(keys, client) == [keys]
        assert by_slot([], client) == []
    finally:
        await client.aclose()


async def test_a_cluster_gets_hash_tags_and_batches_of_one_slot(redis_cluster_url: str) -> None:
    client = connect(redis_cluster_url)
    try:
        assert isinstance(client, RedisCluster)
        stream = slot_group("pg:events", client)
        assert stream == "{pg:events}"
        assert key_slot(stream.encode()) == key_slot(f"{stream}:dead".encode())
        keys = [(f"pg:k{n}", n) for n in range(50)]
        groups = by_slot(keys, client)
        assert len(groups) > 1
        assert sorted(item for group in groups for item in group) == sorted(keys)
        for group in groups:
            assert len({key_slot(key.encode()) for key, _n in group}) == 1
        assert await client.ping()
    finally:
        await client.aclose()
