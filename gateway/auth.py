"""Bearer token or service key -> Viewer; dev tokens; OIDC tokens against a JWKS."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.errors import Unauthenticated
from gateway.settings import Settings

__all__ = ["DEV_AUDIENCE", "DEV_ISSUER", "Authenticator", "Viewer", "mint_dev_token"]

log = logging.getLogger(__name__)

DEV_ISSUER = "portal-gateway-dev"
DEV_AUDIENCE = "portal-gateway"
_OIDC_ALGORITHMS = ["RS256", "ES256"]
_JWKS_MIN_REFETCH = 10.0  # seconds between refetches forced by unknown key ids
_JWKS_MAX_AGE = 600.0  # a retired (or revoked) key stops being trusted within this time


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking. `customer_id` is a CRM id; staff and services reach every customer."""

    subject: str | None = None
    customer_id: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    service: bool = False
    expires_at: float | None = None

    @property
    def authenticated(self) -> bool:
        return self.subject is not None or self.service

    @property
    def privileged(self) -> bool:
        return self.service or "staff" in self.roles

    @property
    def scope(self) -> str:
        """The cache scope of this viewer: whose data its answers may contain."""
        if self.service:
            return "service"
        if "staff" in self.roles:
            return "staff"
        if self.customer_id:
            return f"customer:{self.customer_id}"
        return "anonymous"

    def may_see(self, customer_id: str) -> bool:
        return self.privileged or (self.customer_id is not None and self.customer_id == customer_id)


ANONYMOUS = Viewer()


def mint_dev_token(
    secret: str, customer_id: str | None, roles: list[str] | None = None, ttl: int = 3600
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": customer_id or "staff",
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "roles": roles or [],
    }
    if customer_id:
        claims["customer_id"] = customer_id
    return jwt.encode(claims, secret, algorithm="HS256")


class Authenticator:
    """Verifies credentials. Verified tokens are remembered in process until they expire."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.dev_secret = settings.dev_secret()
        self.service_keys = [k.get_secret_value().encode() for k in settings.service_api_keys]
        self._http = http
        self._jwks: dict[str, Any] = {}
        self._jwks_fetched = float("-inf")
        self._jwks_lock = asyncio.Lock()
        self._verified: OrderedDict[str, Viewer] = OrderedDict()

    async def viewer(self, authorization: str | None, api_key: str | None) -> Viewer:
        """The viewer for a request's Authorization and X-API-Key headers.

        A customer token wins over a service key, so a router forwarding a customer's token
        reaches only that customer's data.
        """
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
            return await self.verify(token.strip())
        if api_key is not None:
            if self._valid_service_key(api_key):
                return Viewer(subject="service", service=True, roles=frozenset({"service"}))
            raise Unauthenticated("invalid API key")
        return ANONYMOUS

    def _valid_service_key(self, key: str) -> bool:
        given = key.encode()
        # compare against every key so timing says nothing about which one matched
        return any([hmac.compare_digest(given, known) for known in self.service_keys])  # noqa: C419

    async def verify(self, token: str) -> Viewer:
        cached = self._verified.get(token)
        now = time.time()
        if cached is not None:
            if cached.expires_at is None or cached.expires_at > now:
                return cached
            del self._verified[token]
        viewer = await self._verify_uncached(token)
        self._verified[token] = viewer
        if len(self._verified) > 10_000:
            self._verified.popitem(last=False)
        return viewer

    async def _verify_uncached(self, token: str) -> Viewer:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed token") from None
        alg = header.get("alg")
        if alg == "HS256" and self.dev_secret:
            claims = self._decode(token, self.dev_secret, ["HS256"], DEV_ISSUER, DEV_AUDIENCE)
        elif alg in _OIDC_ALGORITHMS and self.settings.auth_jwks_url:
            key = await self._signing_key(header.get("kid"), alg)
            claims = self._decode(
                token, key, [alg], self.settings.auth_issuer, self.settings.auth_audience
            )
        else:
            raise Unauthenticated("token algorithm not accepted")
        roles_claim = claims.get(self.settings.auth_roles_claim) or []
        if isinstance(roles_claim, str):
            roles_claim = roles_claim.split()
        customer = claims.get(self.settings.auth_customer_claim)
        return Viewer(
            subject=str(claims.get("sub") or customer or ""),
            customer_id=str(customer) if customer is not None else None,
            roles=frozenset(str(r) for r in roles_claim),
            expires_at=float(claims["exp"]),
        )

    @staticmethod
    def _decode(
        token: str, key: Any, algorithms: list[str], issuer: str | None, audience: str | None
    ) -> dict[str, Any]:
        # A configured issuer or audience is required and must match: the identity provider
        # signs the tokens of every application it serves with the same keys.
        required = ["exp", "sub"]
        if issuer is not None:
            required.append("iss")
        if audience is not None:
            required.append("aud")
        try:
            return jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=issuer,
                audience=audience,
                options={"require": required, "verify_aud": audience is not None},
                leeway=30,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.PyJWTError:
            raise Unauthenticated("invalid token") from None

    async def _signing_key(self, kid: str | None, alg: str) -> Any:
        age = time.monotonic() - self._jwks_fetched
        if age > _JWKS_MAX_AGE:
            async with self._jwks_lock:
                if time.monotonic() - self._jwks_fetched > _JWKS_MAX_AGE:
                    await self._fetch_jwks()
            age = time.monotonic() - self._jwks_fetched
        jwk = self._jwks.get(kid or "")
        if jwk is None and age > _JWKS_MIN_REFETCH:
            async with self._jwks_lock:
                if kid not in self._jwks:
                    await self._fetch_jwks()
            jwk = self._jwks.get(kid or "")
        if jwk is None:
            raise Unauthenticated("token signed by an unknown key")
        kty = jwk.get("kty")
        if (alg == "RS256" and kty != "RSA") or (alg == "ES256" and kty != "EC"):
            raise Unauthenticated("token algorithm does not match its key")
        return (RSAAlgorithm if kty == "RSA" else ECAlgorithm).from_jwk(json.dumps(jwk))

    async def _fetch_jwks(self) -> None:
        assert self.settings.auth_jwks_url
        self._jwks_fetched = time.monotonic()
        client = self._http or httpx.AsyncClient(timeout=5)
        try:
            response = await client.get(self.settings.auth_jwks_url)
            response.raise_for_status()
            keys = response.json().get("keys", [])
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            # keep the keys we have: a flaky identity provider must not log everyone out
            log.warning("JWKS fetch failed", extra={"error": type(exc).__name__})
            return
        finally:
            if self._http is None:
                await client.aclose()
        self._jwks = {str(k.get("kid", "")): k for k in keys if isinstance(k, dict)}
