"""OAuth 2.0 tokens against a strict fake authorization server and a real Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from prometheus_client import REGISTRY
from pydantic import SecretStr

from gateway.errors import IntegrationUnavailable
from gateway.redis_client import RedisClient, slot_group
from gateway.upstream import UpstreamClient
from gateway.upstream.oauth import REFRESH_MARGIN, OAuthCredentials, OAuthTokens
from tests.fakes.oauth import CLIENT_ID, CLIENT_SECRET, FakeAuthorizationServer
from tests.servers import serve
from tests.upstream.conftest import make_settings
from tests.upstream.fake_provider import FakeProvider

pytestmark = pytest.mark.single_and_cluster

VARIABLE = "EXAMPLE_REFRESH_TOKEN"


@pytest.fixture
def auth() -> Iterator[FakeAuthorizationServer]:
    with FakeAuthorizationServer().running() as server:
        yield server


@pytest.fixture
def key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
async def make_tokens(
    cache_prefix: str, key: str, auth: FakeAuthorizationServer
) -> AsyncIterator[Callable[..., OAuthTokens]]:
    """OAuthTokens for the fake (closed after the test): make_tokens(refresh_token, ...)."""
    made: list[OAuthTokens] = []

    def make(
        refresh_token: str | None,
        *,
        redis: RedisClient | None,
        encryption_key: str | None = None,
        client_secret: str = CLIENT_SECRET,
        **options: Any,
    ) -> OAuthTokens:
        settings = make_settings(
            cache_prefix=cache_prefix, token_encryption_key=encryption_key or key
        )
        tokens = OAuthTokens(
            OAuthCredentials(
                provider="example",
                token_url=auth.token_url,
                client_id=CLIENT_ID,
                client_secret=SecretStr(client_secret),
                refresh_token=SecretStr(refresh_token) if refresh_token else None,
                refresh_token_variable=VARIABLE,
            ),
            settings=settings,
            redis=redis,
            **options,
        )
        made.append(tokens)
        return tokens

    yield make
    for tokens in made:
        await tokens.aclose()


@pytest.fixture
async def api(auth: FakeAuthorizationServer) -> AsyncIterator[UpstreamClient]:
    """A client of the fake's protected endpoint: 200 for a valid bearer, 401 otherwise."""
    async with UpstreamClient("example", base_url=auth.url, settings=make_settings()) as client:
        yield client


async def ping(tokens: OAuthTokens, api: UpstreamClient) -> int:
    response = await tokens.request(api, "GET", "/protected", operation="ping")
    return response.status_code


def stored_key(cache_prefix: str, client: RedisClient) -> str:
    """The grant's key: on a cluster one hash tag, so its lock shares the slot."""
    return slot_group(f"{cache_prefix}oauth:example:{CLIENT_ID}", client)


async def test_twenty_requests_rejected_at_once_cause_one_refresh(
    auth: FakeAuthorizationServer,
    make_tokens: Callable[..., OAuthTokens],
    api: UpstreamClient,
    redis_client: RedisClient,
) -> None:
    tokens = make_tokens(auth.connect(), redis=redis_client)
    assert await ping(tokens, api) == 200
    assert auth.outcomes() == ["rotated"]

    auth.expire_access_tokens()  # the provider says expired before the gateway thinks so
    auth.delay = 0.2  # a slow refresh: every request meets its 401 while it runs
    statuses = await asyncio.gather(*(ping(tokens, api) for _ in range(20)))

    assert statuses == [200] * 20
    assert auth.outcomes() == ["rotated", "rotated"]


async def test_two_replicas_share_one_refresh_through_redis(
    auth: FakeAuthorizationServer,
    make_tokens: Callable[..., OAuthTokens],
    api: UpstreamClient,
    redis_client: RedisClient,
) -> None:
    configured = auth.connect()
    first = make_tokens(configured, redis=redis_client)
    second = make_tokens(configured, redis=redis_client)  # another replica, same settings
    assert await ping(first, api) == 200
    assert await ping(second, api) == 200  # reads the stored token: no refresh of its own
    assert auth.outcomes() == ["rotated"]

    auth.expire_access_tokens()
    auth.delay = 0.2
    statuses = await asyncio.gather(
        *(ping(first, api) for _ in range(10)), *(ping(second, api) for _ in range(10))
    )

    assert statuses == [200] * 20
    assert auth.outcomes() == ["rotated", "rotated"]
    assert await first.access_token() == await second.access_token()


async def test_rotated_refresh_token_is_stored_and_the_old_one_never_sent_again(
    auth: FakeAuthorizationServer,
    make_tokens: Callable[..., OAuthTokens],
    api: UpstreamClient,
    redis_client: RedisClient,
) -> None:
    configured = auth.connect()
    tokens = make_tokens(configured, redis=redis_client)
    for _ in range(3):
        assert await ping(tokens, api) == 200
        auth.expire_access_tokens()

    # A restarted replica still has the configured (long rotated) token in its settings.
    restarted = make_tokens(configured, redis=redis_client)
    assert await ping(restarted, api) == 200

    presented = [refresh.refresh_token for refresh in auth.refreshes]
    assert auth.outcomes() == ["rotated"] * 4  # the fake refuses any reuse as invalid_grant
    assert len(set(presented)) == 4
    assert presented[0] == configured
    assert presented.count(configured) == 1


async def test_stored_grant_is_encrypted_at_rest(
    auth: FakeAuthorizationServer,
    make_tokens: Callable[..., OAuthTokens],
    api: UpstreamClient,
    redis_client: RedisClient,
    cache_prefix: str,
    key: str,
) -> None:
    tokens = make_tokens(auth.connect(), redis=redis_client)
    assert await ping(tokens, api) == 200

    stored = await redis_client.hgetall(stored_key(cache_prefix, redis_client))
    assert set(stored) == {b"generation", b"grant"}
    raw = b"".join(stored.values())
    for secret in auth.issued:
        assert secret.encode() not in raw
    # a Fernet token (version byte 0x80), not the grant's JSON; the tokens' "rt-"/"at-"
    # prefixes are not checked for: base64 ciphertext can hold those three bytes by chance
    assert stored[b"grant"].startswith(b"gAAAAA")
    assert b"refresh_token" not in raw
    refresh_token = auth.current_refresh_token
    assert refresh_token is not None
    assert refresh_token.encode() in Fernet(key.encode()).decrypt(stored[b"grant"])

    # a new key listed before the old one still reads it (key rotation)
    rotated = make_tokens(
        None, redis=redis_client, encryption_key=f"{Fernet.generate_key().decode()},{key}"
    )
    assert await ping(rotated, api) == 200

    # a wrong key reads nothing and overwrites nothing
    wrong = make_tokens(None, redis=redis_client, encryption_key=Fernet.generate_key().decode())
    auth.expire_access_tokens()
    with pytest.raises(IntegrationUnavailable) as failure:
        await ping(wrong, api)
    assert failure.value.retryable is False
    assert "TOKEN_ENCRYPTION_KEY" in failure.value.message
    assert wrong.state == "unreadable"
    assert auth.outcomes() == ["rotated"]
    assert await redis_client.hgetall(stored_key(cache_prefix, redis_client)) == stored


async def test_access_token_is_refreshed_before_it_expires(
    auth: FakeAuthorizationServer,
    make_tokens: Callable[..., OAuthTokens],
    redis_client: RedisClient,
) -> None:
    now = [1_000_000.0]
    tokens = make_tokens(auth.connect(), redis=redis_client, clock=lambda: now[0])
    first = await tokens.access_token()

    now[0] += auth.access_ttl - REFRESH_MARGIN - 1
    assert await tokens.access_token() == first
    now[0] += 2  # inside the margin: renewed while the old token is still valid
    second = await tokens.access_token()

    assert second != first
    assert auth.accepts(second)
    assert auth.outcomes() == ["rotated", "rotated"]


async def test_revoked_refresh_token_fails_clearly_on_every_replica(
    auth: FakeAuthorizationServer,
    make_tokens: Callable[..., OAuthTokens],
    api: UpstreamClient,
    redis_client: RedisClient,
) -> None:
    configured = auth.connect()
    tokens = make_tokens(configured, redis=redis_client)
    assert await ping(tokens, api) == 200
    auth.revoke()  # the user disconnected the app: its tokens die with it

    with pytest.raises(IntegrationUnavailable) as failure:
        await ping(tokens, api)
    assert failure.value.source == "example"
    assert failure.value.retryable is False
    assert VARIABLE in failure.value.message
    assert tokens.state == "revoked"
    assert _usable("example") == 0  # what GatewayOAuthGrantUnusable alerts on
    calls = len(auth.refreshes)
    with pytest.raises(IntegrationUnavailable):
        await ping(tokens, api)  # fails at once: the token endpoint is not asked again
    other_replica = make_tokens(configured, redis=redis_client)
    with pytest.raises(IntegrationUnavailable):
        await other_replica.access_token()
    assert other_replica.state == "revoked"
    assert len(auth.refreshes) == calls
    assert auth.outcomes() == ["rotated", "revoked"]

    # An operator reconnects the app and deploys the new refresh token: it starts over.
    reconnected = make_tokens(auth.connect(), redis=redis_client)
    assert await ping(reconnected, api) == 200
    assert reconnected.state == "ok"
    assert _usable("example") == 1


def _usable(source: str) -> float | None:
    return REGISTRY.get_sample_value("gateway_oauth_grant_usable", {"source": source})


async def test_without_redis_the_grant_lives_in_the_process(
    auth: FakeAuthorizationServer, make_tokens: Callable[..., OAuthTokens], api: UpstreamClient
) -> None:
    tokens = make_tokens(auth.connect(), redis=None)
    assert await ping(tokens, api) == 200
    for _ in range(2):
        auth.expire_access_tokens()
        auth.delay = 0.1
        statuses = await asyncio.gather(*(ping(tokens, api) for _ in range(20)))
        assert statuses == [200] * 20

    assert auth.outcomes() == ["rotated"] * 3  # one refresh per expiry, never a reuse


async def test_provider_that_rejects_new_tokens_does_not_rotate_the_grant_per_request(
    auth: FakeAuthorizationServer,
    make_tokens: Callable[..., OAuthTokens],
    redis_client: RedisClient,
) -> None:
    provider = FakeProvider()
    provider.push(401, body={"error": "invalid_token"}, times=10)

    tokens = make_tokens(auth.connect(), redis=redis_client)
    with serve(provider.app) as server:
        async with UpstreamClient(
            "example", base_url=server.url, settings=make_settings()
        ) as client:
            for _ in range(3):
                with pytest.raises(IntegrationUnavailable) as failure:
                    await tokens.request(client, "GET", "/anything", operation="ping")
                assert failure.value.retryable is False

    # the first token, then one refresh for the first 401; the later 401s refresh nothing
    assert auth.outcomes() == ["rotated", "rotated"]


async def test_missing_refresh_token_is_a_clear_error(
    auth: FakeAuthorizationServer,
    make_tokens: Callable[..., OAuthTokens],
    redis_client: RedisClient,
) -> None:
    tokens = make_tokens(None, redis=redis_client)
    with pytest.raises(IntegrationUnavailable) as failure:
        await tokens.access_token()
    assert failure.value.retryable is False
    assert VARIABLE in failure.value.message
    assert tokens.state == "missing"
    assert auth.refreshes == []


async def test_refused_client_credentials_are_a_clear_error(
    auth: FakeAuthorizationServer,
    make_tokens: Callable[..., OAuthTokens],
    redis_client: RedisClient,
) -> None:
    tokens = make_tokens(auth.connect(), redis=redis_client, client_secret="wrong-secret")
    with pytest.raises(IntegrationUnavailable) as failure:
        await tokens.access_token()
    assert failure.value.retryable is False
    assert "client id and secret" in failure.value.message
    assert tokens.state == "rejected"


async def test_token_endpoint_outage_is_retryable_and_releases_the_lock(
    auth: FakeAuthorizationServer,
    make_tokens: Callable[..., OAuthTokens],
    api: UpstreamClient,
    redis_client: RedisClient,
    cache_prefix: str,
) -> None:
    configured = auth.connect()
    tokens = make_tokens(configured, redis=redis_client)
    auth.fail_next(503)

    with pytest.raises(IntegrationUnavailable) as failure:
        await ping(tokens, api)
    assert failure.value.retryable is True
    assert tokens.state == "ok"
    assert await redis_client.exists(stored_key(cache_prefix, redis_client) + ":lock") == 0

    assert await ping(tokens, api) == 200  # the next request refreshes; nothing was burnt
    assert auth.outcomes() == ["fault", "rotated"]


async def test_lock_release_never_deletes_another_holders_lock(
    auth: FakeAuthorizationServer,
    make_tokens: Callable[..., OAuthTokens],
    redis_client: RedisClient,
    cache_prefix: str,
) -> None:
    lock = stored_key(cache_prefix, redis_client) + ":lock"
    tokens = make_tokens(auth.connect(), redis=redis_client)
    auth.delay = 0.3
    refreshing = asyncio.create_task(tokens.access_token())
    for _ in range(200):  # until the refresh holds the lock
        if await redis_client.exists(lock):
            break
        await asyncio.sleep(0.01)
    # As if this holder's lock lapsed and another replica took it meanwhile.
    await redis_client.set(lock, "another-replica", px=5000)

    await refreshing
    assert await redis_client.get(lock) == b"another-replica"


async def test_waits_for_a_refresh_in_progress_elsewhere(
    auth: FakeAuthorizationServer,
    make_tokens: Callable[..., OAuthTokens],
    redis_client: RedisClient,
    cache_prefix: str,
) -> None:
    lock = stored_key(cache_prefix, redis_client) + ":lock"
    tokens = make_tokens(auth.connect(), redis=redis_client)
    started = asyncio.get_running_loop().time()
    await redis_client.set(lock, "another-replica", px=400)  # a replica that then died

    await tokens.access_token()

    # it waited for the lock to lapse (it never writes over another holder's refresh)
    assert asyncio.get_running_loop().time() - started >= 0.39
    assert auth.outcomes() == ["rotated"]


async def test_no_token_reaches_a_log_line(
    auth: FakeAuthorizationServer,
    make_tokens: Callable[..., OAuthTokens],
    api: UpstreamClient,
    redis_client: RedisClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = make_tokens(auth.connect(), redis=redis_client)
    assert await ping(tokens, api) == 200
    auth.expire_access_tokens()
    assert await ping(tokens, api) == 200
    auth.revoke()
    with pytest.raises(IntegrationUnavailable):
        await ping(tokens, api)

    assert caplog.records
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for secret in [*auth.issued, CLIENT_SECRET]:
        assert secret not in text


async def test_configuration_is_checked_when_the_adapter_is_built(
    auth: FakeAuthorizationServer, redis_client: RedisClient
) -> None:
    credentials = OAuthCredentials(
        provider="example",
        token_url=auth.token_url,
        client_id=CLIENT_ID,
        client_secret=SecretStr(CLIENT_SECRET),
        refresh_token=None,
        refresh_token_variable=VARIABLE,
    )
    with pytest.raises(ValueError, match="TOKEN_ENCRYPTION_KEY is required"):
        OAuthTokens(credentials, settings=make_settings(), redis=redis_client)
    bad = "not-a-fernet-key-1234567890"
    with pytest.raises(ValueError, match="TOKEN_ENCRYPTION_KEY must be a Fernet key") as error:
        OAuthTokens(
            credentials, settings=make_settings(token_encryption_key=bad), redis=redis_client
        )
    assert bad not in str(error.value)
