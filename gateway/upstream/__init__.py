"""The lowest layer: resilient HTTP calls to providers (DESIGN sections 1, 8).

Adapters in `gateway.sources` build one `UpstreamClient` per provider and call
`request`; everything else here is the machinery it is made of, public so it can be
tested and reported on (`/readyz` reads `UpstreamClient.breaker_state`).
"""

from gateway.upstream.breaker import BreakerState, CircuitBreaker
from gateway.upstream.client import POOL_SIZE, UpstreamClient
from gateway.upstream.ratelimit import RateLimiter, SlotUnavailable
from gateway.upstream.retry import (
    IDEMPOTENT_METHODS,
    RETRYABLE_STATUSES,
    backoff_delay,
    may_retry,
    parse_retry_after,
    parse_should_retry,
    retryable_status,
)

__all__ = [
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
]
