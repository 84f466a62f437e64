"""Redis clients from REDIS_URL: one node (`redis://`) or a cluster (`redis+cluster://`).

A cluster is reached through redis-py's own asyncio `RedisCluster` (docs/design.md sections
4 and 10). Every multi-key command or script the gateway sends touches one slot: keys that
must be read or written together share a hash tag (`slot_group`), and a batch whose keys
belong together only by timing (the reads of one event-loop turn, the counters of one
request) is split by slot (`by_slot`) and the parts sent concurrently, one round trip per
node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

__all__ = [
    "CLUSTER_SCHEMES",
    "RedisClient",
    "blocking_client",
    "by_slot",
    "cluster_url",
    "concurrently",
    "connect",
    "is_cluster",
    "slot_group",
]

RedisClient: TypeAlias = redis.asyncio.Redis | RedisCluster

# `redis+cluster://host:port` and `rediss+cluster://` (TLS): any one node of the cluster;
# the client learns the others from it (CLUSTER SLOTS) and follows failovers.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

T = TypeVar("T")


def cluster_url(url: str) -> str | None:
    """The plain `redis://` URL of a seed node when `url` names a cluster, else None.

    Raises ValueError for a cluster URL with a database number other than 0 (a cluster has
    only database 0) or without a host.
    """
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme)
    if scheme is None:
        return None
    if not parts.hostname:
        raise ValueError(f"REDIS_URL {parts.scheme}:// needs a host (a node of the cluster)")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(
            f"REDIS_URL names database {parts.path.strip('/')!r}, but a Redis Cluster has "
            "only database 0: drop the path"
        )
    return urlunsplit((scheme, parts.netloc, "", parts.query, ""))


def connect(url: str, **options: Any) -> RedisClient:
    """A client for `url` (one node or a cluster) with redis-py `options` (timeouts,
    protocol, retry); on a cluster `max_connections` bounds each node's pool."""
    seed = cluster_url(url)
    if seed is None:
        client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(url, **options)
        return client
    return RedisCluster.from_url(seed, **options)


async def concurrently(calls: Sequence[Awaitable[T]]) -> list[T]:
    """The calls' answers, awaited together (one call per cluster node or slot); a single
    call is awaited as it is, as a task for it would cost the one-node path CPU for nothing."""
    if len(calls) == 1:
        return [await calls[0]]
    return list(await asyncio.gather(*calls))


def blocking_client(url: str, **options: Any) -> redis.Redis | redis.RedisCluster:
    """A blocking client for `url` (one node or a cluster), for tools off the event loop:
    the benchmark and the tests."""
    seed = cluster_url(url)
    if seed is None:
        return redis.Redis.from_url(url, **options)
    return redis.RedisCluster.from_url(seed, **options)


def is_cluster(client: RedisClient) -> bool:
    """Whether `client` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def slot_group(name: str, client: RedisClient) -> str:
    """`name` for keys that must share a slot: on a cluster wrapped as a hash tag (`{name}`,
    so `{name}:lock` lands in the same slot), on one node as it is (key names unchanged)."""
    return "{" + name + "}" if is_cluster(client) else name


def by_slot(keys: Iterable[tuple[str, T]], client: RedisClient) -> list[list[tuple[str, T]]]:
    """`keys` (each with what travels with it) in groups of one slot each, in first-seen
    order; a single group on one node, where every key shares the one server."""
    items = list(keys)
    if not is_cluster(client):
        return [items] if items else []
    groups: dict[int, list[tuple[str, T]]] = {}
    for key, value in items:
        groups.setdefault(key_slot(key.encode()), []).append((key, value))
    return list(groups.values())
