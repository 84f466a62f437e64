"""When a provider call may be tried again, and how long to wait first (DESIGN section 8).

Pure functions, so the policy can be tested without a clock or a network.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRYABLE_STATUSES",
    "backoff_delay",
    "may_retry",
    "parse_retry_after",
    "parse_should_retry",
    "retryable_status",
]

# RFC 9110 section 9.2.2: repeating these has the same effect as sending them once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

# Throttled, or a server/gateway fault that a later attempt may not meet. 501 and 505 say
# the request itself is wrong for this server, so repeating it cannot help.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def may_retry(method: str, *, idempotency_key: str | None, idempotent: bool | None) -> bool:
    """Whether sending the same request twice is harmless.

    An idempotency key makes any call safe to repeat (the provider answers the repeat from
    its record of the first); `idempotent` overrides the method's default for calls such as
    HubSpot's `batch/read`, a POST that only reads.
    """
    if idempotency_key is not None:
        return True
    if idempotent is not None:
        return idempotent
    return method.upper() in IDEMPOTENT_METHODS


def parse_should_retry(value: str | None) -> bool | None:
    """Stripe's `Stripe-Should-Retry` header: True, False, or None when absent or unclear."""
    if value is None:
        return None
    text = value.strip().lower()
    if text == "true":
        return True
    if text == "false":
        return False
    return None


def retryable_status(status: int, should_retry: bool | None = None) -> bool:
    """Whether a response with `status` is worth another attempt.

    The provider's own verdict (`Stripe-Should-Retry`) wins over the status: Stripe says
    "true" on a 409 lock conflict and "false" on a 5xx whose retry would do harm.
    """
    if should_retry is not None:
        return should_retry
    return status in RETRYABLE_STATUSES


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay seconds or an HTTP date).

    None when the header is absent or unreadable; a date in the past means 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        # float() also accepts "nan" and "inf", which no sleep can honour.
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            return None
        return max(seconds, 0.0)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always GMT; email.utils leaves "-0000" naive.
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max((when - current).total_seconds(), 0.0)


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 for the first).

    Full jitter: uniform in [0, min(cap, base * 2**(attempt - 1))], which spreads the
    retries of many callers instead of having them return in lockstep. A provider's
    `Retry-After` is a floor: waiting less would only earn another 429.
    """
    # The exponent is clamped so a large attempt count cannot overflow a float.
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 60))
    delay = rand() * max(ceiling, 0.0)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
