"""Metrics (DESIGN section 8 names), JSON logs with request ids."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BREAKER_STATE",
    "CACHE_ERRORS",
    "CACHE_REQUESTS",
    "EVENTS_PUBLISHED",
    "REQUESTS",
    "REQUEST_SECONDS",
    "RATE_LIMITED_TOTAL",
    "RESPONSE_CACHE",
    "UPSTREAM_REQUESTS",
    "UPSTREAM_SECONDS",
    "WEBHOOKS",
    "configure_logging",
    "request_id_var",
]

REQUESTS = Counter("gateway_requests_total", "HTTP requests answered", ["endpoint", "status"])
REQUEST_SECONDS = Histogram(
    "gateway_request_seconds",
    "Time to answer a request",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UPSTREAM_REQUESTS = Counter(
    "gateway_upstream_requests_total",
    "Calls to providers",
    ["source", "operation", "outcome"],
)
UPSTREAM_SECONDS = Histogram(
    "gateway_upstream_seconds",
    "Duration of provider calls",
    ["source", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CACHE_REQUESTS = Counter("gateway_cache_requests_total", "Entity cache lookups", ["kind", "result"])
CACHE_ERRORS = Counter("gateway_cache_errors_total", "Cache backend failures", ["operation"])
BREAKER_STATE = Gauge(
    "gateway_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["source"]
)
RESPONSE_CACHE = Counter("gateway_response_cache_total", "Whole-response cache lookups", ["result"])
RATE_LIMITED_TOTAL = Counter(
    "gateway_rate_limited_total", "Requests refused by the gateway's own rate limits"
)
WEBHOOKS = Counter("gateway_webhooks_total", "Webhook deliveries", ["provider", "outcome"])
EVENTS_PUBLISHED = Counter("gateway_events_published_total", "Domain events published", ["type"])

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            payload["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
