"""UpstreamClient against a real fake provider: retries, deadline, breaker, limits, metrics."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

import gateway.upstream
from gateway.errors import IntegrationUnavailable
from gateway.observability import request_id_var
from gateway.upstream import CircuitBreaker, UpstreamClient
from gateway.upstream.ratelimit import LATENCY_MARGIN
from tests.servers import free_port
from tests.upstream.conftest import (
    breaker_gauge,
    make_settings,
    upstream_count,
    upstream_seconds_count,
)
from tests.upstream.fake_provider import FakeProvider

MakeClient = Callable[..., UpstreamClient]


def busiest_window(times: list[float], width: float) -> int:
    """The most calls that arrived within any window [t, t + width)."""
    ordered = sorted(times)
    best = 0
    for i, start in enumerate(ordered):
        inside = sum(1 for t in ordered[i:] if t < start + width)
        best = max(best, inside)
    return best


def test_public_api() -> None:
    expected = {
        "IDEMPOTENT_METHODS",
        "POOL_SIZE",
        "RETRYABLE_STATUSES",
        "BreakerState",
        "CircuitBreaker",
        "RateLimiter",
        "SlotUnavailable",
        "UpstreamClient",
        "backoff_delay",
        "may_retry",
        "parse_retry_after",
        "parse_should_retry",
        "retryable_status",
    }
    assert set(gateway.upstream.__all__) == expected
    for name in expected:
        assert getattr(gateway.upstream, name) is not None


# Retries ------------------------------------------------------------------------------------


async def test_server_error_then_success_is_answered_after_a_retry(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("stripe", provider.url)
    provider.push(500)
    before_error = upstream_count("stripe", "retry.500", "server_error")
    before_ok = upstream_count("stripe", "retry.500", "ok")
    before_timed = upstream_seconds_count("stripe", "retry.500")

    response = await client.request("GET", "/v1/invoices", operation="retry.500")

    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert [call.path for call in provider.calls] == ["/v1/invoices", "/v1/invoices"]
    assert upstream_count("stripe", "retry.500", "server_error") == before_error + 1
    assert upstream_count("stripe", "retry.500", "ok") == before_ok + 1
    assert upstream_seconds_count("stripe", "retry.500") == before_timed + 2


async def test_retries_exhausted_raise_integration_unavailable(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("stripe", provider.url)
    provider.push(503, times=3)

    with pytest.raises(IntegrationUnavailable) as caught:
        await client.request("GET", "/v1/invoices", operation="retry.exhausted")

    assert provider.count() == 3  # RETRY_MAX_ATTEMPTS counts the first attempt
    error = caught.value
    assert error.source == "stripe"
    assert error.retryable is True
    assert error.message == "stripe is unavailable (HTTP 503)"
    assert error.extensions["code"] == "INTEGRATION_UNAVAILABLE"


async def test_retry_after_is_waited_before_the_next_attempt(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("stripe", provider.url, make_settings(upstream_timeout=3.0))
    provider.push(429, headers={"Retry-After": "1"})
    before = upstream_count("stripe", "retry.429", "rate_limited")
    started = time.monotonic()

    response = await client.request("GET", "/v1/invoices", operation="retry.429")

    assert response.status_code == 200
    assert time.monotonic() - started >= 1.0
    first, second = provider.calls
    assert second.at - first.at >= 1.0
    assert upstream_count("stripe", "retry.429", "rate_limited") == before + 1


async def test_retry_after_beyond_the_deadline_fails_at_once(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("stripe", provider.url, make_settings(upstream_timeout=1.0))
    provider.push(429, headers={"Retry-After": "30"})
    started = time.monotonic()

    with pytest.raises(IntegrationUnavailable) as caught:
        await client.request("GET", "/v1/invoices", operation="retry.far")

    # Sleeping 30 s could only end past the 1 s deadline, so it does not sleep at all.
    assert time.monotonic() - started < 1.0
    assert provider.count() == 1
    assert caught.value.retry_after == 30.0
    assert caught.value.extensions["retryAfter"] == 30.0
    assert caught.value.message == "stripe is rate limiting the gateway"


async def test_post_without_idempotency_key_is_never_retried(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("stripe", provider.url)
    provider.push(503)

    with pytest.raises(IntegrationUnavailable):
        await client.request("POST", "/v1/refunds", operation="refunds.create", data={"a": "1"})

    assert provider.count() == 1


async def test_post_with_idempotency_key_is_retried_and_carries_it(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("stripe", provider.url)
    provider.push(503)

    response = await client.request(
        "POST",
        "/v1/billing_portal/sessions",
        operation="portal.create",
        data={"customer": "cus_1"},
        idempotency_key="portal-cus_1-abc",
    )

    assert response.status_code == 200
    assert [call.headers.get("idempotency-key") for call in provider.calls] == [
        "portal-cus_1-abc",
        "portal-cus_1-abc",
    ]
    assert [call.body for call in provider.calls] == [b"customer=cus_1", b"customer=cus_1"]


async def test_post_marked_idempotent_is_retried(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("hubspot", provider.url)
    provider.push(502)

    response = await client.request(
        "POST",
        "/crm/v3/objects/contacts/batch/read",
        operation="contacts.batch_read",
        json={"inputs": [{"id": "1"}]},
        idempotent=True,
    )

    assert response.status_code == 200
    assert provider.count() == 2
    assert "idempotency-key" not in provider.calls[1].headers


async def test_stripe_should_retry_false_stops_retries(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("stripe", provider.url)
    provider.push(503, headers={"Stripe-Should-Retry": "false"})

    with pytest.raises(IntegrationUnavailable) as caught:
        await client.request("GET", "/v1/invoices", operation="retry.stripe_false")

    assert provider.count() == 1
    assert caught.value.retryable is False


async def test_stripe_should_retry_true_retries_a_conflict(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("stripe", provider.url)
    provider.push(409, headers={"Stripe-Should-Retry": "true"})

    response = await client.request("GET", "/v1/invoices", operation="retry.stripe_true")

    assert response.status_code == 200
    assert provider.count() == 2


async def test_client_errors_are_answered_and_leave_the_breaker_closed(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("zendesk", provider.url, make_settings(breaker_failures=2))
    provider.push(404, body={"error": "RecordNotFound"}, times=3)
    before = upstream_count("zendesk", "tickets.show", "client_error")

    for _ in range(3):
        response = await client.request("GET", "/api/v2/tickets/9", operation="tickets.show")
        assert response.status_code == 404
        assert response.json() == {"error": "RecordNotFound"}

    assert provider.count() == 3  # one call each: a 404 is an answer, not a fault
    assert client.breaker_state == "closed"
    assert upstream_count("zendesk", "tickets.show", "client_error") == before + 3


# Deadline and transport failures -----------------------------------------------------------


async def test_hanging_provider_times_out_within_the_deadline(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("xero", provider.url, make_settings(upstream_timeout=0.5))
    provider.push(hang=True, times=3)
    before = upstream_count("xero", "invoices.hang", "timeout")
    started = time.monotonic()

    with pytest.raises(IntegrationUnavailable) as caught:
        await client.request("GET", "/Invoices", operation="invoices.hang")

    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 0.5 + 0.5
    assert caught.value.message == "xero timed out"
    assert upstream_count("xero", "invoices.hang", "timeout") == before + 1


async def test_unreachable_provider_raises_after_retrying(make_client: MakeClient) -> None:
    client = make_client("quickbooks", f"http://127.0.0.1:{free_port()}")
    before = upstream_count("quickbooks", "query.refused", "connection_error")

    with pytest.raises(IntegrationUnavailable) as caught:
        await client.request("GET", "/v3/company/1/query", operation="query.refused")

    assert caught.value.message == "quickbooks could not be reached"
    assert upstream_count("quickbooks", "query.refused", "connection_error") == before + 3


async def test_keep_alive_reuses_one_connection(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("stripe", provider.url)

    for _ in range(5):
        await client.request("GET", "/v1/customers", operation="customers.list")

    assert len({call.client_port for call in provider.calls}) == 1


async def test_a_cookie_a_provider_sets_is_never_sent_back(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    """Calls for every customer share one client: a provider's session cookie must not
    ride along on the next customer's call (and httpx's jar costs ~0.1 ms a call)."""
    client = make_client("stripe", provider.url)
    provider.push(200, headers={"Set-Cookie": "session=abc123; Path=/"})
    await client.request("GET", "/v1/customers", operation="customers.list")
    await client.request("GET", "/v1/customers", operation="customers.list")

    assert [call.headers.get("cookie") for call in provider.calls] == [None, None]


# Circuit breaker ---------------------------------------------------------------------------


async def test_breaker_opens_fails_fast_and_closes_after_one_good_probe(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    settings = make_settings(retry_max_attempts=1, breaker_failures=3, breaker_reset=0.3)
    client = make_client("breaker-a", provider.url, settings)
    # the breaker's own clock, moved by the test: a busy machine's pauses are not the reset
    now = [0.0]
    client.breaker = CircuitBreaker("breaker-a", failures=3, reset=0.3, clock=lambda: now[0])
    provider.push(500, times=3)
    for _ in range(3):
        with pytest.raises(IntegrationUnavailable):
            await client.request("GET", "/x", operation="breaker.a")
    assert client.breaker_state == "open"
    assert breaker_gauge("breaker-a") == 2

    before = upstream_count("breaker-a", "breaker.a", "breaker_open")
    with pytest.raises(IntegrationUnavailable) as caught:
        await client.request("GET", "/x", operation="breaker.a")
    assert provider.count() == 3  # failing fast: the provider saw nothing
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 0.3
    assert upstream_count("breaker-a", "breaker.a", "breaker_open") == before + 1

    now[0] += 0.35
    assert client.breaker_state == "half_open"
    assert breaker_gauge("breaker-a") == 1

    response = await client.request("GET", "/x", operation="breaker.a")
    assert response.status_code == 200
    assert provider.count() == 4
    assert client.breaker_state == "closed"
    assert breaker_gauge("breaker-a") == 0


async def test_breaker_reopens_when_the_probe_fails(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    settings = make_settings(retry_max_attempts=1, breaker_failures=2, breaker_reset=0.3)
    client = make_client("breaker-b", provider.url, settings)
    now = [0.0]  # the breaker's clock, moved by the test (see breaker-a)
    client.breaker = CircuitBreaker("breaker-b", failures=2, reset=0.3, clock=lambda: now[0])
    provider.push(502, times=3)
    for _ in range(2):
        with pytest.raises(IntegrationUnavailable):
            await client.request("GET", "/x", operation="breaker.b")
    now[0] += 0.35

    with pytest.raises(IntegrationUnavailable):
        await client.request("GET", "/x", operation="breaker.b")  # the probe, answered 502
    assert provider.count() == 3
    assert client.breaker_state == "open"
    assert breaker_gauge("breaker-b") == 2

    with pytest.raises(IntegrationUnavailable):
        await client.request("GET", "/x", operation="breaker.b")
    assert provider.count() == 3


async def test_half_open_breaker_lets_exactly_one_probe_through(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    settings = make_settings(retry_max_attempts=1, breaker_failures=1, breaker_reset=0.3)
    client = make_client("breaker-c", provider.url, settings)
    now = [0.0]  # the breaker's clock, moved by the test (see breaker-a)
    client.breaker = CircuitBreaker("breaker-c", failures=1, reset=0.3, clock=lambda: now[0])
    provider.push(500)
    with pytest.raises(IntegrationUnavailable):
        await client.request("GET", "/x", operation="breaker.c")
    now[0] += 0.35
    provider.push(200, delay=0.2)

    results = await asyncio.gather(
        *(client.request("GET", "/x", operation="breaker.c") for _ in range(3)),
        return_exceptions=True,
    )

    assert sum(1 for r in results if isinstance(r, IntegrationUnavailable)) == 2
    assert provider.count() == 2  # the first failure and the single probe
    assert client.breaker_state == "closed"


async def test_retries_stop_when_the_breaker_opens(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    settings = make_settings(retry_max_attempts=5, breaker_failures=2)
    client = make_client("breaker-d", provider.url, settings)
    provider.push(500, times=5)

    with pytest.raises(IntegrationUnavailable):
        await client.request("GET", "/x", operation="breaker.d")

    assert provider.count() == 2
    assert client.breaker_state == "open"


# Rate limits -------------------------------------------------------------------------------


async def test_two_clients_sharing_redis_keep_one_limit(
    provider: FakeProvider,
    make_client: MakeClient,
    redis_client: Redis,
    cache_prefix: str,
) -> None:
    settings = make_settings(
        rate_limit_xero="10/1s", upstream_timeout=5.0, cache_prefix=cache_prefix
    )
    replicas = [make_client("xero", provider.url, settings, redis=redis_client) for _ in "ab"]
    # One call each first: opening connections (HTTP and Redis) delays a cold burst by up to
    # a few hundred ms here, which would blur the windows the server measures. These calls
    # count against the limit and are counted below like the rest.
    await asyncio.gather(
        *(replica.request("GET", "/Invoices", operation="invoices.shared") for replica in replicas)
    )

    responses = await asyncio.gather(
        *(
            replica.request("GET", "/Invoices", operation="invoices.shared")
            for replica in replicas
            for _ in range(14)
        )
    )

    assert all(response.status_code == 200 for response in responses)
    times = [call.at for call in provider.calls]
    assert len(times) == 30
    assert busiest_window(times, 1.0) <= 11
    # 30 calls at 10 a second: the last can leave no earlier than 2 s after the first.
    assert max(times) - min(times) >= 1.9
    assert await redis_client.exists(f"{cache_prefix}ratelimit:xero") == 1


async def test_in_process_limiter_without_redis(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("stripe", provider.url, make_settings(rate_limit_stripe="5/500ms"))

    await asyncio.gather(
        *(client.request("GET", "/v1/invoices", operation="limit.local") for _ in range(12))
    )

    times = [call.at for call in provider.calls]
    assert busiest_window(times, 0.5) <= 6
    assert max(times) - min(times) >= 0.95
    assert client.limiter.shared is False


async def test_unreachable_redis_falls_back_to_the_in_process_limiter(
    provider: FakeProvider, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable: Redis = Redis.from_url("redis://127.0.0.1:1/0")
    try:
        settings = make_settings(rate_limit_stripe="3/500ms")
        client = make_client("stripe", provider.url, settings, redis=unreachable)
        with caplog.at_level(logging.WARNING, logger="gateway.upstream"):
            responses = await asyncio.gather(
                *(client.request("GET", "/v1/x", operation="limit.fallback") for _ in range(6))
            )
    finally:
        await unreachable.aclose()

    assert all(response.status_code == 200 for response in responses)
    times = [call.at for call in provider.calls]
    assert busiest_window(times, 0.5) <= 4  # still limited, now by this process alone
    assert client.limiter.shared is False
    fallbacks = [r for r in caplog.records if "falls back" in r.getMessage()]
    assert len(fallbacks) == 1


async def test_slot_beyond_the_deadline_fails_without_calling(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    settings = make_settings(rate_limit_hubspot="2/10s", upstream_timeout=0.5)
    client = make_client("hubspot", provider.url, settings)
    for _ in range(2):
        await client.request("GET", "/crm/v3/objects/contacts", operation="limit.deadline")
    before = upstream_count("hubspot", "limit.deadline", "throttled")
    started = time.monotonic()

    with pytest.raises(IntegrationUnavailable) as caught:
        await client.request("GET", "/crm/v3/objects/contacts", operation="limit.deadline")

    assert time.monotonic() - started < 0.5
    assert provider.count() == 2
    assert caught.value.retry_after is not None
    assert 9.0 < caught.value.retry_after <= 10.0 + LATENCY_MARGIN
    assert upstream_count("hubspot", "limit.deadline", "throttled") == before + 1


# Logs and messages -------------------------------------------------------------------------


async def test_failures_are_logged_per_attempt_without_secrets(
    provider: FakeProvider, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(
        "zendesk",
        provider.url,
        headers={"Authorization": "Bearer sk_live_TOKEN123"},
    )
    provider.push(500, body={"error": "stack trace PROVIDER_DETAIL"}, times=3)
    token = request_id_var.set("req-42")
    try:
        with (
            caplog.at_level(logging.WARNING, logger="gateway.upstream"),
            pytest.raises(IntegrationUnavailable) as caught,
        ):
            await client.request(
                "GET",
                "/api/v2/users/7/tickets/requested",
                operation="tickets.requested",
                params={"api_key": "QUERY_SECRET"},
            )
    finally:
        request_id_var.reset(token)

    assert provider.calls[0].headers["authorization"] == "Bearer sk_live_TOKEN123"
    attempts = [r for r in caplog.records if getattr(r, "operation", None) == "tickets.requested"]
    assert [(r.provider, r.status, r.attempt) for r in attempts] == [  # type: ignore[attr-defined]
        ("zendesk", 500, 1),
        ("zendesk", 500, 2),
        ("zendesk", 500, 3),
    ]
    assert {r.request_id for r in attempts} == {"req-42"}  # type: ignore[attr-defined]
    leaked = ("TOKEN123", "QUERY_SECRET", "api_key", "PROVIDER_DETAIL", "/api/v2")
    for record in attempts:
        text = record.getMessage() + repr(record.__dict__)
        assert not any(secret in text for secret in leaked)
    assert not any(secret in caught.value.message for secret in leaked)
    assert not any(secret in repr(caught.value.extensions) for secret in leaked)


# What the transport refuses, seen from the client ---------------------------------------------


async def test_a_header_with_cr_lf_is_refused_unsent_and_not_held_against_the_provider(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("crlf", provider.url)
    with pytest.raises(IntegrationUnavailable) as caught:
        await client.request(
            "GET", "/items", operation="items.list", headers={"X-Who": "a\r\nX-Admin: 1"}
        )
    assert caught.value.retryable is False
    assert "not sent" in str(caught.value)
    assert provider.count() == 0
    assert upstream_count("crlf", "items.list", "refused") == 1
    assert client.breaker_state == "closed"
    assert (await client.request("GET", "/items", operation="items.list")).status_code == 200


async def test_an_answer_past_the_size_limit_is_unavailable_and_not_asked_again(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("huge", provider.url, make_settings(upstream_max_response_bytes=20_000))
    provider.push(body={"blob": "x" * 50_000})
    with pytest.raises(IntegrationUnavailable, match="more than the gateway reads"):
        await client.request("GET", "/items", operation="items.list")
    assert provider.count() == 1  # the same answer would be too large again
    assert upstream_count("huge", "items.list", "too_large") == 1
    provider.push(body={"blob": "x" * 10_000})
    answer = await client.request("GET", "/items", operation="items.list")
    assert len(answer.json()["blob"]) == 10_000


async def test_urls_are_merged_with_the_base_as_httpx_merges_them(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    import httpx

    plain = httpx.AsyncClient(base_url=provider.url + "/v1")
    client = make_client("merge", provider.url + "/v1")
    cases = [
        ("/customers", None, "/v1/customers", ""),
        ("customers/42", None, "/v1/customers/42", ""),
        ("/search?q=a%20b", None, "/v1/search", "q=a%20b"),
        ("/search?q=1", {"limit": 3}, "/v1/search", "limit=3"),  # httpx: params replace
        (provider.url + "/abs", None, "/abs", ""),
        ("/customers", None, "/v1/customers", ""),  # remembered this time
    ]
    for url, params, path, query in cases:
        await client.request("GET", url, operation="merge", params=params)
        call = provider.calls[-1]
        assert (call.path, call.query) == (path, query)
        expected = plain.build_request("GET", url, params=params).url
        assert (expected.path, expected.query.decode()) == (path, query)
    await plain.aclose()


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "OPTIONS"])
async def test_a_bodiless_call_sends_what_httpx_request_would(
    provider: FakeProvider, make_client: MakeClient, method: str
) -> None:
    # Without a body, the request is built without httpx's header pass (the transport
    # writes Host from the URL); `content=b""` takes httpx's full path. Both must reach the
    # provider alike.
    client = make_client("bodiless", provider.url + "/v1")
    await client.request(method, "/items/7", operation="items")
    await client.request(method, "/items/7", operation="items", content=b"")
    fast, full = provider.calls[-2:]
    assert fast.headers["host"] == full.headers["host"] == provider.url.split("//")[1]
    assert fast.headers == full.headers
    assert (fast.method, fast.path, fast.body) == (full.method, full.path, full.body)


async def test_an_httpx_auth_flow_signs_every_attempt(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    import httpx

    client = make_client("basic", provider.url, auth=httpx.BasicAuth("agent@example.com", "s3"))
    provider.push(503)
    assert (await client.request("GET", "/tickets", operation="tickets.list")).status_code == 200
    expected = "Basic " + base64.b64encode(b"agent@example.com:s3").decode()
    assert [c.headers["authorization"] for c in provider.calls] == [expected, expected]


async def test_a_closed_client_sends_nothing(
    provider: FakeProvider, make_client: MakeClient
) -> None:
    client = make_client("closed", provider.url)
    assert not client.closed
    await client.aclose()
    assert client.closed
    with pytest.raises(RuntimeError, match="closed"):
        await client.request("GET", "/items", operation="items.list")
    assert provider.count() == 0
