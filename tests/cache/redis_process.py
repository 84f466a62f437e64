"""redis-server processes for tests: one on a given port (Redis coming back after a test
stopped it), or a Redis Cluster of three masters, each with a replica, on free ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis

from tests.servers import free_port

__all__ = ["RedisClusterProcesses", "redis_cluster", "redis_on_port"]


@contextlib.contextmanager
def redis_on_port(port: int, timeout: float = 10) -> Iterator[subprocess.Popen[bytes]]:
    """A fresh, empty redis-server on `port` that answers PING; terminated on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not on PATH: install Redis (apt-get install redis-server)"
        )
    workdir = tempfile.mkdtemp(prefix="pg-redis-")
    process = subprocess.Popen(
        _server_args(binary, port, workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_ready(port, process, timeout)
        yield process
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _server_args(binary: str, port: int, workdir: str) -> list[str]:
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
    ]


@dataclass
class RedisClusterProcesses:
    """A running cluster: its URL for REDIS_URL, and each node's port and process."""

    url: str
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def masters(self) -> list[int]:
        """The ports of the nodes that are masters now (after any failover)."""
        return [port for port, role in self.roles().items() if role == "master"]

    def roles(self) -> dict[int, str]:
        """Each live node's role as the node itself reports it."""
        roles = {}
        for port, process in self.processes.items():
            if process.poll() is not None:
                continue
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                roles[port] = str(client.info("replication")["role"])
            except redis.RedisError:
                continue
            finally:
                client.close()
        return roles


# A node not heard from for this long is failed and its replica promoted: short, so a
# failover test waits about a second (production uses the default 15 s).
NODE_TIMEOUT_MS = 1000


@contextlib.contextmanager
def redis_cluster(timeout: float = 30) -> Iterator[RedisClusterProcesses]:
    """Three masters, each with one replica, on free ports (with free cluster-bus ports),
    from redis-server and redis-cli on PATH; every node stopped and its files removed on
    exit. The URL is `redis+cluster://127.0.0.1:{first master}`."""
    binary = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    if binary is None or cli is None:
        raise RuntimeError(
            "redis-server and redis-cli are not on PATH: install Redis (apt-get install "
            "redis-server)"
        )
    workdir = tempfile.mkdtemp(prefix="pg-redis-cluster-")
    ports = [free_port() for _ in range(6)]
    cluster = RedisClusterProcesses(url=f"redis+cluster://127.0.0.1:{ports[0]}")
    try:
        for port in ports:
            nodedir = f"{workdir}/{port}"
            os.makedirs(nodedir)
            args = [
                *_server_args(binary, port, nodedir),
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(free_port()),
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
            ]
            cluster.processes[port] = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        for port, process in cluster.processes.items():
            _wait_ready(port, process, timeout)
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
        _wait_cluster_ok(ports, timeout)
        yield cluster
    finally:
        for process in cluster.processes.values():
            process.terminate()
        for process in cluster.processes.values():
            process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_cluster_ok(ports: list[int], timeout: float) -> None:
    """Until every node says cluster_state:ok and knows all six nodes."""
    deadline = time.monotonic() + timeout
    waiting = set(ports)
    while waiting:
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis Cluster nodes {sorted(waiting)} did not reach state ok")
        for port in list(waiting):
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                info = client.cluster("info")
                if info.get("cluster_state") == "ok" and int(info["cluster_known_nodes"]) == 6:
                    waiting.discard(port)
            except redis.RedisError:
                pass
            finally:
                client.close()
        time.sleep(0.05)


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    client = redis.Redis(port=port, socket_connect_timeout=0.2, socket_timeout=0.2)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server on port {port} exited with {process.returncode}")
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {port} did not answer PING")
    finally:
        client.close()
