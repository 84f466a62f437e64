"""OIDC tokens against a JWKS served by the test: what is accepted, what answers 401.

The identity provider is a small Starlette app under uvicorn that serves `/jwks.json` and
counts how often the gateway fetches it; the tokens are real JWTs signed with keys made here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import gateway.auth
from gateway.app import create_app
from gateway.auth import mint_dev_token
from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway
from tests.servers import serve

ISSUER = "https://issuer.test"
AUDIENCE = "portal"
RSA_KID = "rsa-2026-01"
EC_KID = "ec-2026-01"
ROTATED_KID = "rsa-2026-07"
ME = "{ me { id } }"
ADA = {"data": {"me": {"id": "1001"}}}
# the gateway refetches the JWKS for an unknown key id at most once per 10 s; tests that
# need a second fetch shrink that window to this many seconds instead of waiting
SHORT_WINDOW = 0.2


@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    foreign: rsa.RSAPrivateKey  # an attacker's key: never in the JWKS
    rotated: rsa.RSAPrivateKey  # the provider's next key


@pytest.fixture(scope="module")
def keys() -> Keys:
    def rsa_key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return Keys(
        rsa=rsa_key(),
        ec=ec.generate_private_key(ec.SECP256R1()),
        foreign=rsa_key(),
        rotated=rsa_key(),
    )


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


class IdentityProvider:
    """Serves a JWKS document at /jwks.json, counting the fetches; `keys` may change."""

    def __init__(self, keys: list[dict[str, Any]], delay: float = 0.0) -> None:
        self.keys = keys
        self.delay = delay
        self.fetches = 0
        self.jwks_url = ""

    async def jwks(self, _request: Request) -> JSONResponse:
        self.fetches += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return JSONResponse({"keys": self.keys})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/jwks.json", self.jwks)])


@pytest.fixture
def provider(keys: Keys) -> Iterator[IdentityProvider]:
    idp = IdentityProvider([public_jwk(keys.rsa, RSA_KID), public_jwk(keys.ec, EC_KID)])
    with serve(idp.app()) as server:
        idp.jwks_url = server.url + "/jwks.json"
        yield idp


@pytest.fixture
def oidc_gateway(
    provider: IdentityProvider, make_settings: Callable[..., Settings]
) -> Iterator[GatewayServer]:
    """The whole gateway trusting `provider` (dev tokens stay on, as in development)."""
    settings = make_settings(
        auth_jwks_url=provider.jwks_url, auth_issuer=ISSUER, auth_audience=AUDIENCE
    )
    with running_gateway(settings) as running:
        yield running


def claims(**changes: Any) -> dict[str, Any]:
    """Ada's claims as the provider issues them; a change to None drops the claim."""
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "idp|ada",
        "customer_id": "1001",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,  # every token distinct, so none is answered from memory
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def signed(key: Any, alg: str, kid: str | None, **changes: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**changes), key, algorithm=alg, headers=headers)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def by_hand(header: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A JWT assembled without PyJWT, for what PyJWT refuses to produce."""
    signing_input = ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims()))
    return f"{signing_input}.{_b64url(sign(signing_input.encode()))}"


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def assert_rejected(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "data" not in body


def ada(keys: Keys) -> str:
    """A valid token: RS256 with the provider's current key."""
    return signed(keys.rsa, "RS256", RSA_KID)


# -- accepted ---------------------------------------------------------------------------------


def test_valid_rs256_and_es256_tokens_reach_me(
    oidc_gateway: GatewayServer, provider: IdentityProvider, keys: Keys
) -> None:
    assert provider.fetches == 0  # fetched on first use, not at start-up
    rs256 = oidc_gateway.query(ME, token=ada(keys))
    assert rs256.status_code == 200
    assert rs256.json() == ADA
    es256 = oidc_gateway.query(ME, token=signed(keys.ec, "ES256", EC_KID))
    assert es256.json() == ADA
    assert provider.fetches == 1  # both keys came with the first fetch

    other = oidc_gateway.query(ME, token=signed(keys.rsa, "RS256", RSA_KID, customer_id="1002"))
    assert other.json() == {"data": {"me": {"id": "1002"}}}

    # roles come from the roles claim, as a list or a space-separated string
    customers = '{ customers(ids: ["1001", "1002"]) { id } }'
    for roles in (["staff"], "staff support"):
        staff = signed(keys.ec, "ES256", EC_KID, customer_id=None, sub="idp|ops", roles=roles)
        body = oidc_gateway.query(customers, token=staff).json()
        assert body == {"data": {"customers": [{"id": "1001"}, {"id": "1002"}]}}
    customer_roles = signed(keys.rsa, "RS256", RSA_KID, roles=["support"])
    forbidden = oidc_gateway.query(customers, token=customer_roles).json()
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"


# -- rejected ---------------------------------------------------------------------------------


def _expired(keys: Keys) -> str:
    now = int(time.time())
    return signed(keys.rsa, "RS256", RSA_KID, iat=now - 3600, exp=now - 300)


def _alg_none(_keys: Keys) -> str:
    return by_hand({"alg": "none", "typ": "JWT"}, lambda _data: b"")


def _hs256_with_public_key(keys: Keys) -> str:
    # key confusion: the RSA public key (which anyone can fetch) used as an HMAC secret
    pem = public_pem(keys.rsa)
    header = {"alg": "HS256", "typ": "JWT", "kid": RSA_KID}
    return by_hand(header, lambda data: hmac.new(pem, data, hashlib.sha256).digest())


REJECTED: dict[str, Callable[[Keys], str]] = {
    "expired": _expired,
    "wrong-audience": lambda k: signed(k.rsa, "RS256", RSA_KID, aud="another-app"),
    "wrong-issuer": lambda k: signed(k.rsa, "RS256", RSA_KID, iss="https://evil.test"),
    "no-audience": lambda k: signed(k.rsa, "RS256", RSA_KID, aud=None),
    "no-issuer": lambda k: signed(k.rsa, "RS256", RSA_KID, iss=None),
    "alg-none": _alg_none,
    "foreign-key-same-kid": lambda k: signed(k.foreign, "RS256", RSA_KID),
    "unknown-kid": lambda k: signed(k.foreign, "RS256", "attacker-key"),
    "no-kid": lambda k: signed(k.rsa, "RS256", None),
    "hs256-signed-with-public-key": _hs256_with_public_key,
    "dev-token-wrong-secret": lambda _k: mint_dev_token("not-the-dev-secret-" + "y" * 24, "1001"),
    "rs256-naming-an-ec-key": lambda k: signed(k.rsa, "RS256", EC_KID),
    "es256-naming-an-rsa-key": lambda k: signed(k.ec, "ES256", RSA_KID),
    "rs384": lambda k: signed(k.rsa, "RS384", RSA_KID),
    "no-expiry": lambda k: signed(k.rsa, "RS256", RSA_KID, exp=None),
    "not-a-jwt": lambda _k: "not.a.jwt",
}


def outcome(response: httpx.Response) -> tuple[int, str | None]:
    errors = response.json().get("errors") or [{}]
    return response.status_code, errors[0].get("extensions", {}).get("code")


def test_rejected_tokens_answer_401_and_the_server_keeps_serving(
    oidc_gateway: GatewayServer, keys: Keys
) -> None:
    assert oidc_gateway.query(ME, token=ada(keys)).json() == ADA
    outcomes = {}
    for name, make_token in REJECTED.items():
        token = make_token(keys)
        first = outcome(oidc_gateway.query(ME, token=token))
        again = outcome(oidc_gateway.query(ME, token=token))  # no rejection is forgotten
        still_serving = oidc_gateway.query(ME, token=ada(keys)).json() == ADA
        outcomes[name] = (first, again, still_serving)
    rejected = ((401, "UNAUTHENTICATED"), (401, "UNAUTHENTICATED"), True)
    assert outcomes == dict.fromkeys(REJECTED, rejected)


# -- production: only tokens issued by its issuer for this gateway ------------------------------

TYPENAME = "{ __typename }"  # needs no provider: what is judged is the token


@pytest.fixture
def production_gateway(
    provider: IdentityProvider, make_production_settings: Callable[..., Settings]
) -> Iterator[GatewayServer]:
    """A production gateway trusting `provider`: no dev tokens, introspection off."""
    settings = make_production_settings(
        auth_jwks_url=provider.jwks_url, auth_issuer=ISSUER, auth_audience=AUDIENCE
    )
    with running_gateway(settings) as running:
        yield running


def test_production_accepts_only_tokens_for_this_gateway_from_its_issuer(
    production_gateway: GatewayServer, keys: Keys
) -> None:
    accepted = production_gateway.query(TYPENAME, token=ada(keys))
    assert accepted.json() == {"data": {"__typename": "Query"}}
    es256 = production_gateway.query(TYPENAME, token=signed(keys.ec, "ES256", EC_KID))
    assert es256.json() == {"data": {"__typename": "Query"}}
    # signed with the provider's own key, but issued for another application or by another
    # issuer, or saying for whom or by whom not at all
    for changes in (
        {"aud": "another-app"},
        {"aud": ["another-app", "a-third-app"]},
        {"iss": "https://evil.test"},
        {"aud": None},
        {"iss": None},
    ):
        token = signed(keys.rsa, "RS256", RSA_KID, **changes)
        assert_rejected(production_gateway.query(TYPENAME, token=token))
    dev_token = mint_dev_token("test-dev-secret-" + "x" * 24, "1001")
    assert_rejected(production_gateway.query(TYPENAME, token=dev_token))
    # an accepted customer is still no service: the schema's SDL is not theirs to read
    sdl = production_gateway.query("{ _service { sdl } }", token=ada(keys)).json()
    assert sdl["data"] is None
    assert sdl["errors"][0]["extensions"]["code"] == "FORBIDDEN"


# -- the JWKS: fetched on demand, refetched for an unknown key id, not too often ----------------


def test_unknown_key_ids_do_not_make_the_gateway_hammer_the_provider(
    oidc_gateway: GatewayServer, provider: IdentityProvider, keys: Keys
) -> None:
    assert oidc_gateway.query(ME, token=ada(keys)).json() == ADA
    assert provider.fetches == 1
    for n in range(5):
        assert_rejected(oidc_gateway.query(ME, token=signed(keys.foreign, "RS256", f"kid-{n}")))
    assert provider.fetches == 1  # within the 10 s window: no refetch


def test_unknown_key_id_refetches_the_jwks_and_is_still_rejected(
    oidc_gateway: GatewayServer,
    provider: IdentityProvider,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The real window is 10 s; shrinking it spares the test the wait.
    monkeypatch.setattr(gateway.auth, "_JWKS_MIN_REFETCH", SHORT_WINDOW)
    assert oidc_gateway.query(ME, token=ada(keys)).json() == ADA
    assert provider.fetches == 1
    time.sleep(SHORT_WINDOW + 0.1)
    assert_rejected(oidc_gateway.query(ME, token=signed(keys.foreign, "RS256", "attacker-key")))
    assert provider.fetches == 2
    assert_rejected(oidc_gateway.query(ME, token=signed(keys.foreign, "RS256", "attacker-key")))
    assert provider.fetches == 2
    assert oidc_gateway.query(ME, token=ada(keys)).json() == ADA


def test_a_rotated_signing_key_is_accepted_on_first_use(
    oidc_gateway: GatewayServer,
    provider: IdentityProvider,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway.auth, "_JWKS_MIN_REFETCH", SHORT_WINDOW)
    assert oidc_gateway.query(ME, token=ada(keys)).json() == ADA
    assert provider.fetches == 1

    # the provider publishes its next key next to the current one, then signs with it
    provider.keys = [*provider.keys, public_jwk(keys.rotated, ROTATED_KID)]
    time.sleep(SHORT_WINDOW + 0.1)
    rotated = oidc_gateway.query(ME, token=signed(keys.rotated, "RS256", ROTATED_KID))
    assert rotated.status_code == 200
    assert rotated.json() == ADA
    assert provider.fetches == 2
    assert oidc_gateway.query(ME, token=signed(keys.rotated, "RS256", ROTATED_KID)).json() == ADA
    assert oidc_gateway.query(ME, token=ada(keys)).json() == ADA  # the old key, still published
    assert provider.fetches == 2

    # then retires the old key: once the gateway next refetches (an unknown key id makes it),
    # new tokens signed with the old key no longer pass
    provider.keys = [public_jwk(keys.rotated, ROTATED_KID)]
    time.sleep(SHORT_WINDOW + 0.1)
    assert_rejected(oidc_gateway.query(ME, token=signed(keys.foreign, "RS256", "attacker-key")))
    assert provider.fetches == 3
    assert_rejected(oidc_gateway.query(ME, token=ada(keys)))
    assert oidc_gateway.query(ME, token=signed(keys.rotated, "RS256", ROTATED_KID)).json() == ADA


def test_rotation_on_a_fresh_gateway_needs_no_wait(
    oidc_gateway: GatewayServer, provider: IdentityProvider, keys: Keys
) -> None:
    """A replica started after the rotation fetches the JWKS at its first token."""
    provider.keys = [public_jwk(keys.rotated, ROTATED_KID)]
    rotated = oidc_gateway.query(ME, token=signed(keys.rotated, "RS256", ROTATED_KID))
    assert rotated.json() == ADA
    assert_rejected(oidc_gateway.query(ME, token=ada(keys)))
    assert provider.fetches == 1


async def test_concurrent_unknown_key_ids_fetch_the_jwks_once(
    make_settings: Callable[..., Settings], keys: Keys
) -> None:
    idp = IdentityProvider([public_jwk(keys.rsa, RSA_KID)], delay=0.2)
    with serve(idp.app()) as provider_server:
        settings = make_settings(
            auth_jwks_url=provider_server.url + "/jwks.json",
            auth_issuer=ISSUER,
            auth_audience=AUDIENCE,
        )
        with serve(create_app(settings), port=settings.port) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                responses = await asyncio.gather(
                    *(
                        client.post(
                            "/graphql",
                            json={"query": ME},
                            headers={
                                "Authorization": "Bearer "
                                + signed(keys.foreign, "RS256", f"kid-{n}")
                            },
                        )
                        for n in range(10)
                    )
                )
    for response in responses:
        assert_rejected(response)
    assert idp.fetches == 1


def test_a_retired_key_stops_being_trusted_after_the_max_age(
    oidc_gateway: GatewayServer,
    provider: IdentityProvider,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway.auth, "_JWKS_MAX_AGE", 0.3)
    assert oidc_gateway.query(ME, token=ada(keys)).json() == ADA
    provider.keys = [public_jwk(keys.ec, EC_KID)]  # the provider retires the RSA key
    time.sleep(0.4)
    assert_rejected(oidc_gateway.query(ME, token=ada(keys)))
    assert oidc_gateway.query(ME, token=signed(keys.ec, "ES256", EC_KID)).json() == ADA
