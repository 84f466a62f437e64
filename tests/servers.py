"""Real servers for tests: any ASGI app under uvicorn on a free port, in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

__all__ = [
    "GatewayProcess",
    "ServerThread",
    "free_port",
    "gateway_process",
    "redis_server",
    "serve",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:`port` in its own thread and event loop."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        options: dict[str, Any] = {"log_level": "warning", "lifespan": "on", **config}
        options.update(host="127.0.0.1", port=self.port)
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.server.serve())
        self.loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)

    def call(self, coro: Any, timeout: float = 10) -> Any:
        """Run a coroutine on the server's own loop (for objects bound to it)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextlib.contextmanager
def serve(app: Any, port: int | None = None, **config: Any) -> Iterator[ServerThread]:
    """`app` served until the block ends; `config`: more uvicorn.Config options (a gateway
    is served with those of gateway.server.uvicorn_options, as `portal-gateway serve` does)."""
    server = ServerThread(app, port, **config).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes], int]]:
    """A private redis-server on a free port (for tests that stop and restart Redis)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not on PATH: install Redis (apt-get install redis-server)"
        )
    port = free_port()
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
    _wait_port(port)
    try:
        yield f"redis://127.0.0.1:{port}/0", process, port
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


class GatewayProcess:
    """`portal-gateway serve` as a child process; its stderr (the JSON logs) in a file."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, stderr: Path) -> None:
        self.process = process
        self.url = url
        self.stderr_path = stderr

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()


@contextlib.contextmanager
def gateway_process(workdir: Path, env: dict[str, str]) -> Iterator[GatewayProcess]:
    """The real command with the real signal handling: settings from `env` only, run in
    `workdir` (no .env read, .dev-secret written there); killed afterwards if still up."""
    port = free_port()
    command = Path(sys.executable).with_name("portal-gateway")
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    environment = {k: v for k, v in os.environ.items() if k in keep}
    environment.update({"HOST": "127.0.0.1", "PORT": str(port), **env})
    stderr_path = workdir / f"gateway-{port}.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [str(command), "serve"],
            cwd=workdir,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        _wait_port(port, timeout=30, process=process)
        yield GatewayProcess(process, f"http://127.0.0.1:{port}", stderr_path)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def _wait_port(
    port: int, timeout: float = 10, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process exited ({process.returncode}) before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port}")
