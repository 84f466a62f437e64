"""The gateway in its own process, as users run it: `portal-gateway serve`, one worker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

__all__ = ["GatewayProcess", "ProcessGone", "stop_process"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, `grace` seconds to exit, then SIGKILL; reaped either way."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class ProcessGone(RuntimeError):
    """The process exited while it was supposed to serve."""


class GatewayProcess:
    """`command` serving on 127.0.0.1:`port` with `env`; its output goes to `log_path`."""

    def __init__(self, command: list[str], env: dict[str, str], port: int, log_path: Path) -> None:
        self.command = command
        self.env = env
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, timeout: float = 60) -> GatewayProcess:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.log_path.parent,  # no stray .env or .dev-secret of a checkout
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise ProcessGone(
                    f"the gateway exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ProcessGone(f"the gateway did not answer /healthz:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, grace=20)  # uvicorn shuts down gracefully (lifespan)

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # -- what the table reports of the process ------------------------------------------

    def reset_peak_rss(self) -> None:
        """Start a new peak: VmHWM drops to the current RSS (Linux clear_refs 5)."""
        # where the kernel refuses, the peak is the process's lifetime peak: an upper bound
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def peak_rss_mb(self) -> float | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the process has used so far."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        # after the command name: state is field 3, utime 14 and stime 15 (1-based)
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
