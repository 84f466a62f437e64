"""Settings validate at the edge; production refuses unsafe defaults with a reason each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.encryption import DataCipher
from gateway.settings import RateLimit, Settings
from tests.conftest import DATA_KEY


def test_defaults_are_the_embedded_sandbox() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.crm_source, settings.billing_source) == ("sandbox", "sandbox")
    assert settings.ttl("crm") == 300
    assert settings.introspection is True
    assert settings.rate_limit("stripe").calls == 25


def test_production_refuses_dev_auth_sandbox_and_default_introspection() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, gateway_env="production", auth_dev_secret="s")  # type: ignore[call-arg]
    message = str(raised.value)
    assert "AUTH_DEV_SECRET is set" in message
    assert "CRM_SOURCE=sandbox" in message
    assert "BILLING_SOURCE=sandbox" in message
    assert "GATEWAY_INTROSPECTION is unset" in message


# what production accepts, apart from the identity provider's claims
REAL_PROVIDERS: dict[str, Any] = {
    "gateway_env": "production",
    "auth_jwks_url": "https://id.example.com/jwks.json",
    "crm_source": "hubspot",
    "billing_source": "stripe",
    "helpdesk_source": "zendesk",
    "files_source": "s3",
    "gateway_introspection": False,
    "stripe_webhook_secret": "whsec_x",
    "hubspot_client_secret": "h",
    "zendesk_webhook_secret": "z",
    "data_encryption_keys": DATA_KEY,
}
CLAIMS = {"auth_issuer": "https://id.example.com/", "auth_audience": "portal-gateway"}


def test_production_with_real_configuration_starts() -> None:
    settings = Settings(_env_file=None, **REAL_PROVIDERS, **CLAIMS)  # type: ignore[call-arg]
    assert settings.introspection is False
    assert settings.graphiql is False


# OIDC without both claims checked would accept tokens the identity provider issued to
# other applications
OIDC_REFUSALS = {
    "neither": ({}, ["AUTH_AUDIENCE is unset", "AUTH_ISSUER is unset"]),
    "no audience": ({"auth_issuer": CLAIMS["auth_issuer"]}, ["AUTH_AUDIENCE is unset"]),
    "no issuer": ({"auth_audience": CLAIMS["auth_audience"]}, ["AUTH_ISSUER is unset"]),
    "empty audience": ({**CLAIMS, "auth_audience": ""}, ["AUTH_AUDIENCE is unset"]),
}


@pytest.mark.parametrize("case", list(OIDC_REFUSALS))
def test_production_refuses_oidc_without_audience_and_issuer(case: str) -> None:
    claims, expected = OIDC_REFUSALS[case]
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, **REAL_PROVIDERS, **claims)  # type: ignore[call-arg]
    refusals = [
        line.strip().removeprefix("- ")
        for line in str(raised.value).splitlines()
        if line.strip().startswith("- ")
    ]
    # one line each, and nothing else refused
    assert [line.split(":")[0] for line in refusals] == expected
    if "AUTH_AUDIENCE is unset" in expected:
        assert any("other application would be accepted" in line for line in refusals)


def test_graphiql_is_on_in_development_and_off_in_production_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    production = {**REAL_PROVIDERS, **CLAIMS}
    assert Settings(_env_file=None).graphiql is True  # type: ignore[call-arg]
    assert Settings(_env_file=None, **production).graphiql is False  # type: ignore[call-arg]
    monkeypatch.setenv("GATEWAY_GRAPHIQL", "true")
    assert Settings(_env_file=None, **production).graphiql is True  # type: ignore[call-arg]
    monkeypatch.setenv("GATEWAY_GRAPHIQL", "false")
    assert Settings(_env_file=None).graphiql is False  # type: ignore[call-arg]


def test_production_refuses_to_start_without_a_data_key_and_says_how_to_make_one() -> None:
    production = {**REAL_PROVIDERS, **CLAIMS, "data_encryption_keys": None}
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, **production)  # type: ignore[call-arg]
    message = str(raised.value)
    assert "DATA_ENCRYPTION_KEYS is unset" in message
    assert "base64.urlsafe_b64encode(os.urandom(32))" in message


def test_a_bad_data_key_is_refused_by_position_never_echoed() -> None:
    secret_looking = "not-a-key-but-maybe-a-secret"
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, data_encryption_keys=f"{DATA_KEY},{secret_looking}")  # type: ignore[call-arg]
    assert "entry 2 is not 32 bytes" in str(raised.value)
    assert secret_looking not in str(raised.value)


def test_development_generates_one_data_key_and_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATA_ENCRYPTION_KEYS")
    first = Settings(_env_file=None).data_cipher()  # type: ignore[call-arg]
    again = Settings(_env_file=None).data_cipher()  # type: ignore[call-arg]
    assert (tmp_path / ".dev-data-key").stat().st_mode & 0o777 == 0o600
    sealed = first.seal(b"kept across restarts", b"pg:crm:customer:1")
    assert again.open(sealed, b"pg:crm:customer:1") == b"kept across restarts"
    stored = (tmp_path / ".dev-data-key").read_text().strip()
    assert DataCipher.from_setting(stored).key_id == first.key_id


def test_production_names_a_missing_webhook_secret() -> None:
    with pytest.raises(ValidationError, match="STRIPE_WEBHOOK_SECRET is unset"):
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            gateway_env="production",
            billing_source="stripe",
            auth_jwks_url="https://id.example.com/jwks.json",
            gateway_introspection=False,
        )


def test_environment_variables_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_FAIL", "billing, files")
    monkeypatch.setenv("CACHE_TTL_CRM", "120")
    monkeypatch.setenv("RATE_LIMIT_XERO", "60/60s")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.sandbox_fail == ["billing", "files"]
    assert settings.ttl("crm") == 120
    assert (settings.rate_limit("xero").calls, settings.rate_limit("xero").per) == (60, 60.0)


def test_bad_rate_limit_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_STRIPE", "lots")
    with pytest.raises(ValidationError, match="rate_limit_stripe"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_rate_limit_units() -> None:
    assert RateLimit.parse("100/10s").per == 10
    assert RateLimit.parse("5/500ms").per == 0.5
    assert RateLimit.parse("60/1m").per == 60


def test_trusted_proxies_are_addresses_or_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/8, 127.0.0.1,fd00::/8")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.forwarded_allow_ips == ["10.0.0.0/8", "127.0.0.1", "fd00::/8"]
    assert Settings(_env_file=None, forwarded_allow_ips="*").forwarded_allow_ips == ["*"]  # type: ignore[call-arg]
    # uvicorn would take these as names no peer ever has: a proxy silently not trusted
    for wrong in ("10.0.0.1/8", "ingress.internal", "10.0.0.0/33"):
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", wrong)
        with pytest.raises(ValidationError, match=r"forwarded_allow_ips[\s\S]*CIDR"):
            Settings(_env_file=None)  # type: ignore[call-arg]
    # uvicorn trusts every peer only for a lone "*"; in a list it would be a name
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*,10.0.0.0/8")
    with pytest.raises(ValidationError, match="stands alone"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_server_deadlines_default_below_the_shutdown_grace() -> None:
    """A request still reading its body at SIGTERM is answered before uvicorn's grace ends
    (it would otherwise be cancelled: a 500)."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.forwarded_allow_ips == []  # the socket peer is the client
    assert (settings.http_header_timeout, settings.http_keepalive_timeout) == (5, 5)
    assert settings.http_body_timeout == 10 < settings.shutdown_grace
    assert settings.http_max_header_bytes == 65_536
