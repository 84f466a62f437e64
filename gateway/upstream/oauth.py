"""OAuth 2.0 access tokens for providers on the authorization-code grant (QuickBooks, Xero).

The gateway holds one grant per provider: a refresh token, from which it mints access
tokens that live an hour (Intuit) or thirty minutes (Xero). Both providers rotate the
refresh token on use, and a used refresh token is dead: a grant whose newest refresh token
is lost or burnt needs a person to reconnect the app. Everything here serves that one
constraint.

- The grant lives in Redis (hash `{CACHE_PREFIX}oauth:{provider}:{client id}`, on a cluster
  in braces as one hash tag, with its lock `...:lock` in the same slot), encrypted
  with Fernet under TOKEN_ENCRYPTION_KEY, and is written in one HSET together with its
  generation number, so the new refresh token replaces the old atomically and an older
  generation can never overwrite a newer one. The configured refresh token
  (QUICKBOOKS_REFRESH_TOKEN, XERO_REFRESH_TOKEN) starts the chain when Redis holds none,
  and again when the stored grant is revoked and the configured token is a different one
  (an operator reconnected the app); otherwise Redis wins, because the configured token
  has long been rotated away.
- One refresh at a time across replicas: a Redis lock (SET NX PX with a random token,
  released by a Lua compare-and-delete, in the same script that stores the new grant).
  Within a process an asyncio lock makes it single flight. Callers that do not hold the
  lock poll Redis until the new grant appears, then use it.
- Access tokens are refreshed REFRESH_MARGIN before they expire, and when the provider
  answers 401 (`request` retries the call once with the new token). A token this process
  minted after a 401, and the provider has not accepted once, is not refreshed again on a
  401 for REJECTION_COOLDOWN seconds: a provider that rejects brand-new tokens (wrong scopes,
  wrong company) must not make every request rotate the grant.
- `invalid_grant` means the refresh token was revoked or expired: the grant is marked
  revoked (in Redis, so every replica knows), calls fail at once with a non-retryable
  IntegrationUnavailable, and `state` says "revoked" for /readyz.
- No Redis configured: the same logic on an in-process grant (one replica, or tests).
  Redis configured but unreachable: a grant that needs a refresh fails retryably instead of
  refreshing locally, because two replicas refreshing the same token burn the grant, which
  only a person can repair, while a Redis outage repairs itself.

Tokens never reach a log line, a metric or an error message.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import msgspec
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr
from redis.exceptions import RedisError

from gateway.errors import IntegrationUnavailable
from gateway.observability import OAUTH_GRANT_USABLE
from gateway.redis_client import RedisClient, slot_group
from gateway.settings import Settings
from gateway.upstream.client import UpstreamClient

__all__ = [
    "REFRESH_MARGIN",
    "REJECTION_COOLDOWN",
    "OAuthCredentials",
    "OAuthTokens",
    "TokenState",
    "token_cipher",
]

log = logging.getLogger("gateway.upstream.oauth")

# "ok" until something is known to be wrong; every other state makes /readyz report it.
TokenState = Literal["ok", "missing", "revoked", "rejected", "unreadable"]

# Refresh this long before the access token expires (or at half its life when shorter),
# so a token never expires in flight and clock skew between replicas does not matter.
REFRESH_MARGIN = 120.0
# See the module docstring: at most one refresh this often while the provider rejects
# every new token.
REJECTION_COOLDOWN = 60.0
# While the grant is revoked or missing, look at Redis again at most this often (another
# replica, or an operator, may have reconnected the app).
RECHECK_INTERVAL = 10.0
# How often a caller waiting for another replica's refresh looks at Redis.
POLL_INTERVAL = 0.05
# One Redis round trip of the token store, at most.
_REDIS_TIMEOUT = 1.0
# The lock outlives the refresh call (bounded by UPSTREAM_TIMEOUT) by this much.
_LOCK_MARGIN = 5.0

# Store the new grant only when it is newer than the stored one, and release the lock
# only when it is still ours; both in one atomic step.
_STORE = """
local stored = tonumber(redis.call('HGET', KEYS[1], 'generation') or '-1')
local written = 0
if tonumber(ARGV[1]) > stored then
  redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'grant', ARGV[2])
  written = 1
end
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return written
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


def token_cipher(key: SecretStr) -> MultiFernet:
    """The cipher of stored grants from TOKEN_ENCRYPTION_KEY.

    The value is one Fernet key, or several separated by commas, newest first: the first
    encrypts, all decrypt, so a key can be rotated without losing the stored grant.
    """
    parts = [part.strip() for part in key.get_secret_value().split(",") if part.strip()]
    try:
        if not parts:
            raise ValueError("empty")
        return MultiFernet([Fernet(part) for part in parts])
    except ValueError:
        # binascii.Error is a ValueError; neither message may carry the key itself.
        raise ValueError(
            "TOKEN_ENCRYPTION_KEY must be a Fernet key (32 url-safe base64-encoded bytes), or "
            "several separated by commas, newest first; generate one with: python -c "
            '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
        ) from None


@dataclass(frozen=True, slots=True)
class OAuthCredentials:
    """An OAuth app's registration with one provider, as configured."""

    provider: str  # "quickbooks", "xero": the source name in errors and metrics
    token_url: str
    client_id: str
    client_secret: SecretStr
    refresh_token: SecretStr | None  # the configured start of the chain
    refresh_token_variable: str  # e.g. "QUICKBOOKS_REFRESH_TOKEN", for messages


class _Grant(msgspec.Struct, frozen=True):
    """What is stored (encrypted): the refresh token and the access token minted from it."""

    refresh_token: str
    generation: int = 0
    access_token: str = ""
    access_expires_at: float = 0.0  # unix seconds
    issued_at: float = 0.0
    refresh_expires_at: float | None = None
    # Fingerprint of the configured refresh token this chain started from: tells a
    # reconnected app's new token from the one Redis already rotated past.
    seed: str = ""
    revoked: bool = False


class _Unavailable(IntegrationUnavailable):
    """An IntegrationUnavailable that also moves the token state."""

    def __init__(self, source: str, message: str, state: TokenState) -> None:
        super().__init__(source, message, retryable=False)
        self.state = state


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


class OAuthTokens:
    """The access tokens of one provider: fresh, rotated, shared by every replica."""

    def __init__(
        self,
        credentials: OAuthCredentials,
        *,
        settings: Settings,
        redis: RedisClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`redis` shares the grant with every replica (then TOKEN_ENCRYPTION_KEY is
        required); `transport` replaces the token client's transport (tests only);
        `clock` is wall time, because expiry times are shared between machines.
        """
        self.provider = credentials.provider
        self._credentials = credentials
        self._settings = settings
        self._clock = clock
        self._shared: _RedisGrants | None = None
        if redis is not None:
            if settings.token_encryption_key is None:
                raise ValueError(
                    f"TOKEN_ENCRYPTION_KEY is required to keep {self.provider} OAuth tokens "
                    "in Redis (they are stored encrypted); generate one with: python -c "
                    '"from cryptography.fernet import Fernet; '
                    'print(Fernet.generate_key().decode())"'
                )
            self._shared = _RedisGrants(
                self.provider,
                redis,
                token_cipher(settings.token_encryption_key),
                # the grant and its lock share a slot on a cluster: one script writes both
                key=slot_group(
                    f"{settings.cache_prefix}oauth:{self.provider}:{credentials.client_id}", redis
                ),
                lock_ttl=settings.upstream_timeout + _LOCK_MARGIN,
            )

        url = httpx.URL(credentials.token_url)
        origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        self._token_path = url.raw_path.decode("ascii")
        basic = f"{credentials.client_id}:{credentials.client_secret.get_secret_value()}"
        self._token_headers = {
            "Authorization": "Basic " + base64.b64encode(basic.encode()).decode("ascii"),
            "Accept": "application/json",
        }
        # The token endpoint has its own host, breaker and metrics label ("xero-oauth").
        self._http = UpstreamClient(
            f"{self.provider}-oauth",
            base_url=origin,
            settings=settings,
            redis=redis,
            transport=transport,
        )
        self._local_lock = asyncio.Lock()
        self._grant: _Grant | None = None
        self._state: TokenState = "ok"
        self._failure: _Unavailable | None = None
        self._recheck_at = 0.0
        self._unsaved: _Grant | None = None
        self._accepted = ""  # the last access token the provider answered other than 401
        # The last token this process minted because the provider answered 401.
        self._minted_after_rejection: _Grant | None = None

    @property
    def state(self) -> TokenState:
        """Whether an access token can be had: "ok", "missing" (no refresh token anywhere),
        "revoked" (the provider refused it), "rejected" (the provider refused the client
        credentials) or "unreadable" (the stored grant does not decrypt with the key)."""
        return self._state

    async def aclose(self) -> None:
        await self._http.aclose()

    async def access_token(self, rejected: str | None = None) -> str:
        """A valid access token; `rejected` is one the provider just answered 401 to."""
        token = self._fresh(self._grant, rejected)
        if token is not None:
            return token
        async with self._local_lock:
            # Whoever held the lock may have refreshed already.
            token = self._fresh(self._grant, rejected)
            if token is not None:
                return token
            failure = self._failure
            if failure is not None and self._clock() < self._recheck_at:
                # A new instance each time: re-raising one would grow its traceback.
                raise _Unavailable(self.provider, failure.message, failure.state)
            try:
                if self._shared is None:
                    return await self._renew_local(rejected)
                return await self._renew_shared(self._shared, rejected)
            except _Unavailable as failure:
                self._fail(failure)
                raise

    async def request(
        self,
        client: UpstreamClient,
        method: str,
        url: str,
        *,
        operation: str,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """`client.request` with the bearer token; on a 401, refresh and retry once."""
        token = await self.access_token()
        response = await client.request(
            method,
            url,
            operation=operation,
            params=params,
            headers={**(headers or {}), "Authorization": f"Bearer {token}"},
        )
        if response.status_code != 401:
            self._accepted = token
            return response
        token = await self.access_token(rejected=token)
        response = await client.request(
            method,
            url,
            operation=operation,
            params=params,
            headers={**(headers or {}), "Authorization": f"Bearer {token}"},
        )
        if response.status_code == 401:
            raise IntegrationUnavailable(
                self.provider,
                f"{self.provider} rejected a freshly refreshed access token",
                retryable=False,
            )
        self._accepted = token
        return response

    # -- the decisions ----------------------------------------------------------------------

    def _fresh(self, grant: _Grant | None, rejected: str | None) -> str | None:
        """The grant's access token when it is usable now, else None."""
        if grant is None or grant.revoked or not grant.access_token:
            return None
        if grant.access_token == rejected:
            return None
        lifetime = grant.access_expires_at - grant.issued_at
        margin = min(REFRESH_MARGIN, max(lifetime, 0.0) / 2)
        if grant.access_expires_at - margin <= self._clock():
            return None
        return grant.access_token

    def _effective(self, stored: _Grant | None) -> _Grant:
        """The grant to refresh from: the stored one, or the configured token where the
        stored one is absent or revoked and the configured token is a new one."""
        configured = self._credentials.refresh_token
        seed = _fingerprint(configured.get_secret_value()) if configured else None
        if stored is not None and (not stored.revoked or seed in (None, stored.seed)):
            if stored.revoked:
                raise self._revoked()
            return stored
        if configured is None or seed is None:
            raise _Unavailable(
                self.provider,
                f"{self.provider} is not connected: no refresh token is stored or configured; "
                f"connect the app and set {self._credentials.refresh_token_variable}",
                "missing",
            )
        generation = stored.generation if stored is not None else 0
        return _Grant(refresh_token=configured.get_secret_value(), generation=generation, seed=seed)

    def _check_rejection(self, rejected: str | None) -> None:
        minted = self._minted_after_rejection
        if (
            rejected is not None
            and minted is not None
            and minted.access_token == rejected
            and self._accepted != rejected
            and self._clock() - minted.issued_at < REJECTION_COOLDOWN
        ):
            raise IntegrationUnavailable(
                self.provider,
                f"{self.provider} rejects newly issued access tokens; check the app's scopes "
                "and the configured company or tenant",
                retryable=False,
            )

    def _revoked(self) -> _Unavailable:
        return _Unavailable(
            self.provider,
            f"{self.provider} refused the refresh token (revoked or expired): reconnect the "
            f"app and set {self._credentials.refresh_token_variable} to the new refresh token",
            "revoked",
        )

    def _adopt(self, grant: _Grant) -> str:
        self._grant = grant
        self._state = "ok"
        OAUTH_GRANT_USABLE.labels(self.provider).set(1)
        self._failure = None
        return grant.access_token

    def _fail(self, failure: _Unavailable) -> None:
        if self._state != failure.state:
            log.error(
                "%s OAuth grant is unusable: %s",
                self.provider,
                failure.state,
                extra={"provider": self.provider, "oauth_state": failure.state},
            )
        self._state = failure.state
        OAUTH_GRANT_USABLE.labels(self.provider).set(0)
        self._failure = failure
        self._recheck_at = self._clock() + RECHECK_INTERVAL
        if failure.state == "revoked" and self._grant is not None:
            # Revoking a grant revokes its access tokens too: stop sending the last one.
            self._grant = msgspec.structs.replace(self._grant, revoked=True, access_token="")

    # -- without Redis ----------------------------------------------------------------------

    async def _renew_local(self, rejected: str | None) -> str:
        grant = self._effective(self._grant)
        self._check_rejection(rejected)
        try:
            renewed = await self._exchange(grant, after_rejection=rejected is not None)
        except _Unavailable as failure:
            if failure.state == "revoked":
                self._grant = msgspec.structs.replace(grant, revoked=True, access_token="")
            raise
        return self._adopt(renewed)

    # -- with Redis -------------------------------------------------------------------------

    async def _renew_shared(self, shared: _RedisGrants, rejected: str | None) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.upstream_timeout + _LOCK_MARGIN
        while True:
            stored = await shared.read()
            if stored is not None and self._fresh(stored, rejected) is not None:
                return self._adopt(stored)
            # Revoked or missing: fail without taking the lock.
            self._effective(stored)
            lock = await shared.acquire()
            if lock is not None:
                return await self._renew_locked(shared, lock, rejected)
            if loop.time() >= deadline:
                raise IntegrationUnavailable(
                    self.provider,
                    f"{self.provider} token refresh by another replica did not finish in time",
                )
            await asyncio.sleep(POLL_INTERVAL)

    async def _renew_locked(self, shared: _RedisGrants, lock: str, rejected: str | None) -> str:
        released = False
        try:
            if self._unsaved is not None:
                # A refresh whose result could not be stored: store it before anything
                # else, or the next refresh would send the refresh token it replaced.
                await shared.store(self._unsaved, lock, release=False)
                self._unsaved = None
            stored = await shared.read()
            if stored is not None and self._fresh(stored, rejected) is not None:
                return self._adopt(stored)
            grant = self._effective(stored)
            self._check_rejection(rejected)
            try:
                renewed = await self._exchange(grant, after_rejection=rejected is not None)
            except _Unavailable as failure:
                if failure.state != "revoked":
                    raise
                current = await shared.read()
                if (
                    current is not None
                    and not current.revoked
                    and current.refresh_token != grant.refresh_token
                ):
                    # Our lock lapsed and another replica rotated the token meanwhile:
                    # the grant is alive, only the token we sent was old.
                    return self._adopt(current)
                dead = msgspec.structs.replace(
                    grant, generation=grant.generation + 1, revoked=True, access_token=""
                )
                await shared.store(dead, lock, release=True)
                released = True
                raise
            try:
                await shared.store(renewed, lock, release=True)
                released = True
            except IntegrationUnavailable:
                self._unsaved = renewed
                log.error(
                    "%s refreshed its token but could not store it; will store it next time",
                    self.provider,
                    extra={"provider": self.provider, "generation": renewed.generation},
                )
            return self._adopt(renewed)
        finally:
            if not released:
                await shared.release(lock)

    # -- the provider -----------------------------------------------------------------------

    async def _exchange(self, grant: _Grant, *, after_rejection: bool) -> _Grant:
        """The refresh-token grant at the provider's token endpoint."""
        try:
            # Not retried: a refresh whose answer was lost may have rotated the token, and
            # sending the old one again would burn the grant. The next request retries.
            response = await self._http.request(
                "POST",
                self._token_path,
                operation="oauth.refresh",
                data={"grant_type": "refresh_token", "refresh_token": grant.refresh_token},
                headers=self._token_headers,
                idempotent=False,
            )
        except IntegrationUnavailable as exc:
            raise IntegrationUnavailable(
                self.provider,
                f"{self.provider} token endpoint is unavailable",
                retryable=exc.retryable,
                retry_after=exc.retry_after,
            ) from None
        body = _json_object(response)
        if response.status_code != 200:
            error = str(body.get("error") or "")
            if error == "invalid_grant":
                raise self._revoked()
            if error in ("invalid_client", "unauthorized_client"):
                raise _Unavailable(
                    self.provider,
                    f"{self.provider} refused the OAuth client credentials ({error}); check "
                    f"the client id and secret",
                    "rejected",
                )
            raise IntegrationUnavailable(
                self.provider,
                f"{self.provider} token endpoint refused the refresh "
                f"(HTTP {response.status_code}{', ' + error if error else ''})",
                retryable=False,
            )
        access = body.get("access_token")
        expires_in = body.get("expires_in")
        if not isinstance(access, str) or not access or not isinstance(expires_in, int | float):
            raise IntegrationUnavailable(
                self.provider, f"{self.provider} token endpoint answered without an access token"
            )
        now = self._clock()
        rotated = body.get("refresh_token")
        refresh_ttl = body.get("x_refresh_token_expires_in")  # Intuit only
        renewed = _Grant(
            # A provider may answer without a new refresh token: the old one stays valid.
            refresh_token=rotated if isinstance(rotated, str) and rotated else grant.refresh_token,
            generation=grant.generation + 1,
            access_token=access,
            access_expires_at=now + float(expires_in),
            issued_at=now,
            refresh_expires_at=(
                now + float(refresh_ttl)
                if isinstance(refresh_ttl, int | float)
                else grant.refresh_expires_at
            ),
            seed=grant.seed,
        )
        if after_rejection:
            self._minted_after_rejection = renewed
        log.info(
            "%s access token refreshed",
            self.provider,
            extra={
                "provider": self.provider,
                "generation": renewed.generation,
                "rotated": renewed.refresh_token != grant.refresh_token,
                "reason": "rejected" if after_rejection else "expiry",
            },
        )
        return renewed


class _RedisGrants:
    """The encrypted grant in Redis and the lock that makes one refresh at a time."""

    def __init__(
        self, provider: str, redis: RedisClient, cipher: MultiFernet, *, key: str, lock_ttl: float
    ) -> None:
        self._provider = provider
        self._redis = redis
        self._cipher = cipher
        self._key = key
        self._lock_key = key + ":lock"
        self._lock_ms = round(lock_ttl * 1000)
        self._store = redis.register_script(_STORE)
        self._release = redis.register_script(_RELEASE)

    async def read(self) -> _Grant | None:
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT):
                sealed = await self._redis.hget(self._key, "grant")
        except _REDIS_ERRORS:
            raise self._unreachable() from None
        if sealed is None:
            return None
        try:
            return msgspec.json.decode(self._cipher.decrypt(sealed), type=_Grant)
        except InvalidToken:
            raise _Unavailable(
                self._provider,
                f"the stored {self._provider} OAuth grant does not decrypt with "
                "TOKEN_ENCRYPTION_KEY (was the key replaced? list the old key after the new)",
                "unreadable",
            ) from None
        except msgspec.DecodeError:
            raise _Unavailable(
                self._provider, f"the stored {self._provider} OAuth grant is corrupt", "unreadable"
            ) from None

    async def store(self, grant: _Grant, lock: str, *, release: bool) -> None:
        """Write `grant` unless a newer generation is stored; release `lock` if asked."""
        sealed = self._cipher.encrypt(msgspec.json.encode(grant))
        # Losing this write loses the only valid refresh token: try a few times.
        for attempt in range(3):
            try:
                async with asyncio.timeout(_REDIS_TIMEOUT):
                    await self._store(
                        keys=[self._key, self._lock_key],
                        args=[grant.generation, sealed, lock if release else ""],
                    )
                return
            except _REDIS_ERRORS:
                await asyncio.sleep(0.1 * (attempt + 1))
        raise self._unreachable()

    async def acquire(self) -> str | None:
        """The lock's token when this caller now holds it, else None."""
        token = secrets.token_hex(16)
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT):
                taken = await self._redis.set(self._lock_key, token, nx=True, px=self._lock_ms)
        except _REDIS_ERRORS:
            raise self._unreachable() from None
        return token if taken else None

    async def release(self, lock: str) -> None:
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT):
                await self._release(keys=[self._lock_key], args=[lock])
        except _REDIS_ERRORS:
            # The lock expires on its own.
            log.warning(
                "%s token lock not released: Redis failed",
                self._provider,
                extra={"provider": self._provider},
            )

    def _unreachable(self) -> IntegrationUnavailable:
        return IntegrationUnavailable(
            self._provider,
            f"{self._provider} access token needs a refresh and the token store (Redis) "
            "is unreachable",
        )


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
