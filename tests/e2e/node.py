"""Node.js for the e2e tests: find it, install the committed npm lock, run the js/ scripts.

The npm packages (package.json + package-lock.json beside this file) are installed with
`npm ci` into `tests/e2e/.node/` (git-ignored) and reinstalled only when the lock, the
manifest or Node's major version changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["MIN_NODE_MAJOR", "NPM_CI_TIMEOUT", "Node", "NodeUnavailable", "RunningScript"]

E2E_DIR = Path(__file__).resolve().parent
SCRIPTS_DIR = E2E_DIR / "js"
INSTALL_DIR = E2E_DIR / ".node"
MIN_NODE_MAJOR = 20
NPM_CI_TIMEOUT = 600  # seconds: the first `npm ci` on a cold npm cache can take minutes
INSTALL_HINT = (
    f"Node.js {MIN_NODE_MAJOR}+ with npm is needed for the e2e tests "
    "(Debian/Ubuntu: apt-get install nodejs npm; older distributions ship an older Node: "
    "take one from https://nodejs.org)"
)


class NodeUnavailable(Exception):
    """Node.js, npm or the npm packages are not there; the message says what to install."""


class RunningScript:
    """A long-running script: its process, the JSON line it printed once ready, and the
    JSON lines it prints after that."""

    def __init__(self, process: subprocess.Popen[str], ready: dict[str, Any]) -> None:
        self.process = process
        self.ready = ready
        self._lines: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put("")  # end of output

    def next_report(self, timeout: float = 10) -> dict[str, Any]:
        """The next JSON line the script prints."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the script printed nothing within {timeout} s") from None
        if not line:
            raise AssertionError("the script ended")
        report: dict[str, Any] = json.loads(line)
        return report

    def finish(self, timeout: float = 10) -> list[dict[str, Any]]:
        """Close its stdin (it stops) and return what it printed until it ended."""
        self.stop(timeout)
        reports = []
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line:
                reports.append(json.loads(line))
        return reports

    def stop(self, timeout: float = 10) -> None:
        _stop(self.process, self._reader, timeout)


@dataclass(frozen=True)
class Node:
    executable: str
    modules: Path

    @classmethod
    def installed(cls) -> Node:
        """Node and the e2e npm packages, installing the packages if the lock changed."""
        node = shutil.which("node")
        npm = shutil.which("npm")
        if node is None or npm is None:
            raise NodeUnavailable(INSTALL_HINT)
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        major = int(version.lstrip("v").split(".")[0])
        if major < MIN_NODE_MAJOR:
            raise NodeUnavailable(f"found Node.js {version}; {INSTALL_HINT}")
        return cls(node, _install_packages(npm, major))

    def env(self, **values: str) -> dict[str, str]:
        return {**os.environ, "NODE_PATH": str(self.modules), "NO_COLOR": "1", **values}

    def run(self, script: str, timeout: float = 90, **env: str) -> dict[str, Any]:
        """Run js/`script` to its end; the last line it prints is a JSON report."""
        result = subprocess.run(
            [self.executable, str(SCRIPTS_DIR / script)],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        lines = result.stdout.strip().splitlines()
        if result.returncode != 0 or not lines:
            raise AssertionError(
                f"{script} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        report: dict[str, Any] = json.loads(lines[-1])
        if "failure" in report:
            raise AssertionError(f"{script} failed:\n{report['failure']}\n{result.stderr}")
        return report

    @contextlib.contextmanager
    def start(self, script: str, timeout: float = 30, **env: str) -> Iterator[RunningScript]:
        """Start js/`script`, wait for its JSON ready line; on exit close its stdin (it stops)."""
        with tempfile.TemporaryFile("w+") as stderr:
            process = subprocess.Popen(
                [self.executable, str(SCRIPTS_DIR / script)],
                env=self.env(**env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            assert process.stdout is not None
            line = _readline(process.stdout, timeout)
            if not line:
                _stop(process, timeout=0)
                stderr.seek(0)
                raise AssertionError(f"{script} did not start:\n{stderr.read()}")
            running = RunningScript(process, json.loads(line))
            try:
                yield running
            finally:
                running.stop()


def _readline(stream: IO[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        try:
            lines.put(stream.readline())
        except ValueError:  # closed by _stop after a timeout
            lines.put("")

    threading.Thread(target=read, daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


def _stop(
    process: subprocess.Popen[str], reader: threading.Thread | None = None, timeout: float = 10
) -> None:
    """Close stdin (the scripts stop on it), kill after `timeout`, then close stdout."""
    if process.stdin is not None and not process.stdin.closed:
        process.stdin.close()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if reader is not None and reader.is_alive():
        reader.join(timeout)  # the process has ended, so its output ends too
    if process.stdout is not None and (reader is None or not reader.is_alive()):
        process.stdout.close()


def _install_packages(npm: str, node_major: int) -> Path:
    manifest = (E2E_DIR / "package.json").read_bytes()
    lock = (E2E_DIR / "package-lock.json").read_bytes()
    wanted = hashlib.sha256(manifest + lock + f"node{node_major}".encode()).hexdigest()
    modules = INSTALL_DIR / "node_modules"
    stamp = INSTALL_DIR / ".installed"
    INSTALL_DIR.mkdir(exist_ok=True)
    with (INSTALL_DIR / ".lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # two pytest runs at once install once
        if modules.is_dir() and stamp.exists() and stamp.read_text() == wanted:
            return modules
        stamp.unlink(missing_ok=True)
        (INSTALL_DIR / "package.json").write_bytes(manifest)
        (INSTALL_DIR / "package-lock.json").write_bytes(lock)
        # --ignore-scripts: the only install scripts in the tree are protobufjs version nags
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            cwd=INSTALL_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise NodeUnavailable(
                f"`npm ci` in {INSTALL_DIR} failed (is the npm registry reachable?):\n"
                + (result.stderr or result.stdout)[-2000:]
            )
        stamp.write_text(wanted)
    return modules
