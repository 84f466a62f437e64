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
