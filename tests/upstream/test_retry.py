"""The retry policy as pure functions: Retry-After, Stripe-Should-Retry, backoff, methods."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from gateway.upstream.retry import (
    backoff_delay,
    may_retry,
    parse_retry_after,
    parse_should_retry,
    retryable_status,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("1", 1.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-4", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_retry_after_in_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_retry_after_as_http_date() -> None:
    later = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert later.endswith("GMT")
    assert parse_retry_after(later, now=NOW) == 30.0


def test_retry_after_date_in_the_past_means_now() -> None:
    earlier = format_datetime(NOW - timedelta(minutes=5), usegmt=True)
    assert parse_retry_after(earlier, now=NOW) == 0.0


@pytest.mark.parametrize(
    ("header", "verdict"),
    [
        ("true", True),
        (" True ", True),
        ("false", False),
        ("FALSE", False),
        ("maybe", None),
        (None, None),
    ],
)
def test_stripe_should_retry_header(header: str | None, verdict: bool | None) -> None:
    assert parse_should_retry(header) is verdict


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    assert retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501, 505])
def test_other_statuses_are_not_retried(status: int) -> None:
    assert not retryable_status(status)


def test_stripe_should_retry_overrides_the_status() -> None:
    assert retryable_status(409, should_retry=True)
    assert not retryable_status(503, should_retry=False)
    assert not retryable_status(429, should_retry=False)


@pytest.mark.parametrize(
    ("method", "key", "idempotent", "expected"),
    [
        ("GET", None, None, True),
        ("get", None, None, True),
        ("HEAD", None, None, True),
        ("OPTIONS", None, None, True),
        ("PUT", None, None, True),
        ("DELETE", None, None, True),
        ("POST", None, None, False),
        ("PATCH", None, None, False),
        ("POST", "key-1", None, True),
        ("POST", None, True, True),
        ("GET", None, False, False),
        ("POST", "key-1", False, True),
    ],
)
def test_which_calls_may_be_retried(
    method: str, key: str | None, idempotent: bool | None, expected: bool
) -> None:
    assert may_retry(method, idempotency_key=key, idempotent=idempotent) is expected


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    def top() -> float:
        return 1.0

    delays = [backoff_delay(n, base=0.2, cap=5.0, rand=top) for n in range(1, 8)]
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])


def test_backoff_is_full_jitter() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(3, base=0.2, cap=5.0, rand=rng.random) for _ in range(500)]
    assert all(0.0 <= delay <= 0.8 for delay in delays)
    # Spread over the whole range, not clustered at the ceiling.
    assert min(delays) < 0.1
    assert max(delays) > 0.7


def test_backoff_waits_at_least_retry_after() -> None:
    assert backoff_delay(1, base=0.2, cap=5.0, retry_after=2.0, rand=lambda: 0.5) == 2.0
    assert backoff_delay(6, base=1.0, cap=5.0, retry_after=0.5, rand=lambda: 1.0) == 5.0


def test_backoff_survives_huge_attempt_numbers() -> None:
    assert backoff_delay(5000, base=0.2, cap=5.0, rand=lambda: 1.0) == 5.0
