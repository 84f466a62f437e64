"""Fixtures of the real-client tests: Node.js with the npm packages, Chromium, a gateway.

Where Node.js or Chromium is missing these tests are skipped with a message saying what to
install; with CI=true they fail instead, so CI never passes by skipping them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from gateway.settings import Settings
from tests.conftest import GatewayServer
from tests.conftest import running_gateway as gateway_on_settings
from tests.e2e.node import NPM_CI_TIMEOUT, Node, NodeUnavailable
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = ROOT / "test-artifacts"
SERVICE_KEY = "test-service-key"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
ON_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Room for the one-off `npm ci` in whichever e2e test runs first."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(NPM_CI_TIMEOUT + 120))


def unavailable(message: str) -> NoReturn:
    """Skip on a developer machine; fail on CI, where every e2e test must run."""
    if ON_CI:
        pytest.fail(f"{message}\n(CI=true: the e2e tests must run, not skip)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def node() -> Node:
    try:
        return Node.installed()
    except NodeUnavailable as missing:
        unavailable(str(missing))


@pytest.fixture(scope="session")
def chromium() -> str:
    """$CHROMIUM, else the first Chromium or Chrome on PATH."""
    candidates = [os.environ.get("CHROMIUM", "")] + [shutil.which(n) or "" for n in CHROMIUM_NAMES]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    unavailable(
        "Chromium is needed for the GraphiQL browser test: apt-get install chromium "
        "(or set CHROMIUM=/path/to/chrome)"
    )


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    return ARTIFACTS_DIR


@pytest.fixture(scope="session")
def browse(node: Node, chromium: str, artifacts_dir: Path) -> Callable[..., dict[str, Any]]:
    """browse(script, screenshot, **env): the report of one page session of js/`script`
    (js/chromium.cjs: loopback only, every request recorded), its screenshot kept in
    test-artifacts/`screenshot`."""

    def run(script: str, screenshot: str, **env: str) -> dict[str, Any]:
        path = artifacts_dir / screenshot
        path.unlink(missing_ok=True)
        return node.run(script, CHROMIUM=chromium, SCREENSHOT=str(path), **env)

    return run


def assert_rendered(screenshot: Path) -> None:
    """A PNG of a rendered page, not of a blank one."""
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000


@contextlib.contextmanager
def running_gateway(files_dir: Path, **overrides: Any) -> Iterator[GatewayServer]:
    """The whole gateway on sandbox data under uvicorn (like `gateway_server`, any scope)."""
    values: dict[str, Any] = {
        "auth_dev_secret": "e2e-dev-secret-" + "x" * 24,
        "sandbox_files_dir": files_dir,
        "port": free_port(),
        "service_api_keys": [SERVICE_KEY],
        **overrides,
    }
    settings = Settings(_env_file=None, **values)
    with gateway_on_settings(settings) as running:
        yield running


@pytest.fixture(scope="module")
def e2e_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """One gateway shared by a module's tests."""
    with running_gateway(tmp_path_factory.mktemp("files")) as gateway:
        yield gateway
