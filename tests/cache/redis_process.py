"""A redis-server started on a given port: Redis coming back after a test stopped it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis

__all__ = ["redis_on_port"]


@contextlib.contextmanager
def redis_on_port(port: int, timeout: float = 10) -> Iterator[subprocess.Popen[bytes]]:
    """A fresh, empty redis-server on `port` that answers PING; terminated on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not on PATH: install Redis (apt-get install redis-server)"
        )
    workdir = tempfile.mkdtemp(prefix="pg-redis-")
    args = [
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
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(port, process, timeout)
        yield process
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


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
