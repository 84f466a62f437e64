"""The benchmark's Redis: REDIS_URL, or one of its own (a node or a cluster), and its
bench-only key prefix emptied."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis

from bench.ports import free_port
from gateway.redis_client import blocking_client

__all__ = ["bench_redis", "delete_prefix"]


def _reachable(url: str) -> bool:
    try:
        client = blocking_client(url, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@contextlib.contextmanager
def bench_redis(kind: str = "auto") -> Iterator[str]:
    """`auto`: REDIS_URL if set, else a redis-server of the benchmark's own (so Redis's
    counters hold only the benchmark's commands: bench/scale.py); `cluster`: three masters
    with a replica each, from redis-server and redis-cli on PATH."""
    if kind == "cluster":
        from tests.cache.redis_process import redis_cluster

        with redis_cluster() as cluster:
            yield cluster.url
        return
    url = os.environ.get("REDIS_URL", "")
    if url:
        if not _reachable(url):
            raise SystemExit(f"REDIS_URL {url} does not answer")
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "no REDIS_URL and no redis-server on PATH: set REDIS_URL, or install Redis "
            "(apt-get install redis-server)"
        )
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="pg-bench-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not _reachable(url):
            if time.monotonic() > deadline:
                raise SystemExit(f"redis-server on port {port} did not start")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def delete_prefix(client: redis.Redis | redis.RedisCluster, prefix: str) -> int:
    """Delete every key under `prefix` (the benchmark's own); answers how many."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=prefix + "*", count=5000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += int(client.unlink(*batch))
            batch = []
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted
