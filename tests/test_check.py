"""`portal-gateway check`: configuration, then one read-only call per provider."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.check import run_checks
from gateway.cli import main
from gateway.errors import IntegrationUnavailable
from gateway.settings import Settings
from gateway.sources.registry import Sources, build_sources
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.stripe import running_fake_stripe
from tests.fakes.zendesk import FakeZendesk
from tests.servers import free_port

SETTINGS_PREFIXES = (
    "GATEWAY_",
    "REDIS_",
    "CRM_",
    "BILLING_",
    "HELPDESK_",
    "FILES_",
    "SANDBOX_",
    "RATE_LIMIT_",
    "QUERY_",
    "PORT",
    "HOST",
    "BREAKER_",
    "AUTH_",
)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean working directory and no gateway settings in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(SETTINGS_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AUTH_DEV_SECRET", "dev-secret-for-check-tests-0123456789")
    return monkeypatch


def _run(capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["check"])
    return code, capsys.readouterr().out.splitlines()


def test_sandbox_configuration_checks_ok(
    environment: pytest.MonkeyPatch, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.setenv("REDIS_URL", redis_url)
    code, lines = _run(capsys)
    assert lines == [
        "configuration: ok",
        "redis: ok",
        "crm (sandbox-crm): ok",
        "billing (sandbox-billing): ok",
        "helpdesk (sandbox-helpdesk): ok",
        "files (sandbox-files): ok",
    ]
    assert code == 0


def test_a_failing_provider_fails_the_check_on_its_own_line(
    environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.setenv("SANDBOX_FAIL", "billing")
    code, lines = _run(capsys)
    assert code == 1
    assert "billing (sandbox-billing): FAILED: sandbox-billing is unavailable (simulated)" in lines
    assert "crm (sandbox-crm): ok" in lines
    assert len([line for line in lines if "FAILED" in line]) == 1


def test_invalid_settings_are_listed_one_line_each(
    environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.setenv("PORT", "eighty")
    environment.setenv("RATE_LIMIT_STRIPE", "fast")
    environment.setenv("BREAKER_FAILURES", "0")
    environment.setenv("BILLING_SOURCE", "paypal")
    code, lines = _run(capsys)
    assert code == 1
    assert lines[0] == "configuration: FAILED"
    problems = [line.strip() for line in lines[1:]]
    assert len(problems) == 4
    assert {p.split(":")[0] for p in problems} == {
        "PORT",
        "RATE_LIMIT_STRIPE",
        "BREAKER_FAILURES",
        "BILLING_SOURCE",
    }
    assert any("CALLS/PERIOD" in p for p in problems)  # says what was expected


def test_production_refusals_are_configuration_failures(
    environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.setenv("GATEWAY_ENV", "production")
    code, lines = _run(capsys)
    assert code == 1
    assert lines[0] == "configuration: FAILED"
    refusals = [line.strip() for line in lines[1:]]
    # each refusal on its own line: the dev secret, then each sandbox source
    assert any(line.startswith("SETTINGS: AUTH_DEV_SECRET is set") for line in refusals)
    for kind in ("CRM", "BILLING", "HELPDESK", "FILES"):
        assert any(line.startswith(f"SETTINGS: {kind}_SOURCE=sandbox") for line in refusals)


def test_an_unreachable_redis_fails_without_showing_its_password(
    environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.setenv("REDIS_URL", f"redis://:pw-Xq7Lm2Rt9@127.0.0.1:{free_port()}/0")
    code, lines = _run(capsys)
    assert code == 1
    (redis_line,) = [line for line in lines if line.startswith("redis")]
    assert redis_line.startswith("redis: FAILED: ")
    assert "pw-Xq7Lm2Rt9" not in "\n".join(lines)


class _Crm:
    """A CRM adapter whose check() the command must prefer to a read."""

    name = "hubspot"

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.checked = 0

    async def check(self) -> None:
        self.checked += 1
        if self.error is not None:
            raise self.error

    async def customers(self, ids: Sequence[str]) -> list[Any]:
        raise AssertionError("check() exists: no read expected")

    async def aclose(self) -> None:
        pass


async def test_a_source_check_method_is_used_and_its_secrets_stay_out(
    make_settings: Any,
) -> None:
    token = "pat-na1-aaaabbbb-cccc-dddd-eeee-ffff00001111"
    settings: Settings = make_settings(hubspot_access_token=token)
    sandbox = build_sources(settings)
    failing = _Crm(RuntimeError(f"401 from https://api.hubapi.com?hapikey={token} for {token}"))
    sources = Sources(
        crm=failing, billing=sandbox.billing, helpdesk=sandbox.helpdesk, files=sandbox.files
    )  # type: ignore[arg-type]
    results = await run_checks(settings, sources)
    crm = results[0]
    assert failing.checked == 1
    assert crm.name == "crm (hubspot)"
    assert not crm.ok
    assert token not in crm.line()
    assert crm.line().startswith("crm (hubspot): FAILED: RuntimeError: 401 from")

    passing = _Crm(None)
    sources.crm = passing  # type: ignore[assignment]
    assert all(result.ok for result in await run_checks(settings, sources))
    assert passing.checked == 1


async def test_a_provider_error_is_shown_by_its_safe_message(make_settings: Any) -> None:
    settings: Settings = make_settings()
    sandbox = build_sources(settings)
    crm = _Crm(IntegrationUnavailable("hubspot", "hubspot is unavailable (HTTP 401)"))
    sources = Sources(
        crm=crm, billing=sandbox.billing, helpdesk=sandbox.helpdesk, files=sandbox.files
    )  # type: ignore[arg-type]
    (line, *_rest) = [r.line() for r in await run_checks(settings, sources)]
    assert line == "crm (hubspot): FAILED: hubspot is unavailable (HTTP 401)"


def test_the_console_command_exits_1_on_failure(tmp_path: Path) -> None:
    command = Path(sys.executable).with_name("portal-gateway")
    env = {
        "PATH": "/usr/bin:/bin",
        "AUTH_DEV_SECRET": "dev-secret-for-check-tests-0123456789",
        "SANDBOX_FAIL": "helpdesk,files",
    }
    done = subprocess.run(
        [str(command), "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "helpdesk (sandbox-helpdesk): FAILED" in done.stdout
    assert "files (sandbox-files): FAILED" in done.stdout


async def test_real_adapters_are_checked_with_one_read_each(make_settings: Any) -> None:
    """HubSpot, Stripe and Zendesk adapters against their fakes: one call each, and a
    revoked token is a FAILED line that does not show the token."""
    with (
        FakeHubSpot().running() as hubspot,
        FakeZendesk().running() as zendesk,
        running_fake_stripe("sk_test_check_0123456789") as stripe,
    ):
        options = {
            "crm_source": "hubspot",
            "hubspot_api_base": hubspot.url,
            "billing_source": "stripe",
            "stripe_api_base": stripe.url,
            "stripe_api_key": stripe.api_key,
            "helpdesk_source": "zendesk",
            "zendesk_base_url": zendesk.url,
            "zendesk_email": zendesk.email,
            "zendesk_api_token": zendesk.token,
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.02,
        }
        good = await run_checks(make_settings(hubspot_access_token=hubspot.token, **options))
        assert [r.line() for r in good[:3]] == [
            "crm (hubspot): ok",
            "billing (stripe): ok",
            "helpdesk (zendesk): ok",
        ]
        assert len(hubspot.calls) == 1
        assert len(stripe.calls) == 1
        assert len(zendesk.calls) == 1

        revoked = "pat-na1-00000000-1111-2222-3333-444444444444"
        bad = await run_checks(make_settings(hubspot_access_token=revoked, **options))
        assert bad[0].line().startswith("crm (hubspot): FAILED: ")
        assert revoked not in bad[0].line()
        assert bad[2].ok, bad[0].line()
