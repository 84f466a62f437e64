"""The console script: token minting and schema export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jwt


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def test_token_uses_the_shared_dev_secret_file(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    first = run("token", "--customer", "1002", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    secret = (tmp_path / ".dev-secret").read_text().strip()
    assert oct((tmp_path / ".dev-secret").stat().st_mode & 0o777) == "0o600"
    claims = jwt.decode(
        first.stdout.strip(), secret, algorithms=["HS256"], audience="portal-gateway"
    )
    assert claims["customer_id"] == "1002"
    second = run("token", "--role", "staff", "--ttl", "60", cwd=tmp_path, env=env)
    staff = jwt.decode(
        second.stdout.strip(), secret, algorithms=["HS256"], audience="portal-gateway"
    )
    assert staff["roles"] == ["staff"]
    assert staff["exp"] - staff["iat"] == 60


def test_token_refused_in_production(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "GATEWAY_ENV": "production",
    }
    result = run("token", "--customer", "1", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "refusing to start in production" in result.stderr


_STARTS_SERVED_APP = """
import asyncio, gc
from gateway.app import served_app, create_app

async def started(app):
    async with app.app.router.lifespan_context(app.app):
        return gc.get_freeze_count()

print(asyncio.run(started(create_app())), asyncio.run(started(served_app())))
"""


def test_the_served_app_takes_its_startup_heap_out_of_the_collectors_view(
    tmp_path: Path,
) -> None:
    """`serve`'s factory freezes what startup made (full collections would walk it on every
    pass); create_app, which tests build many times over, does not."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run(
        [sys.executable, "-c", _STARTS_SERVED_APP],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    plain, served = (int(n) for n in result.stdout.split())
    assert plain == 0
    assert served > 10_000
