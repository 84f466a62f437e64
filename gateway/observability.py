"""Metrics (DESIGN section 8 names), JSON logs with request and trace ids, redacted."""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import re
import sys
import time
from secrets import token_hex
from typing import IO, TYPE_CHECKING, Any

import orjson
from prometheus_client import Counter, Gauge, Histogram

from gateway import tracing
from gateway.redaction import RedactionFilter, settings_secrets

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = [
    "BREAKER_STATE",
    "CACHE_ERRORS",
    "CACHE_REQUESTS",
    "CACHE_UNDECRYPTABLE",
    "EVENTS_LAG",
    "EVENTS_PUBLISHED",
    "OAUTH_GRANT_USABLE",
    "OUTBOX_DEAD_LETTERS",
    "OUTBOX_WRITES",
    "RATE_LIMITED_TOTAL",
    "REQUESTS",
    "REQUEST_SECONDS",
    "RESPONSE_CACHE",
    "UPSTREAM_REQUESTS",
    "UPSTREAM_SECONDS",
    "WEBHOOKS",
    "JsonFormatter",
    "RequestIdFilter",
    "RequestNote",
    "configure_logging",
    "count_source_call",
    "count_upstream_call",
    "labelled",
    "log_request",
    "request_id_from",
    "request_id_var",
    "request_note_var",
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
CACHE_UNDECRYPTABLE = Counter(
    "gateway_cache_undecryptable_total",
    "Stored values that did not decrypt (retired key, tampered, moved) and were read as misses",
    ["kind"],
)
BREAKER_STATE = Gauge(
    "gateway_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["source"]
)
RESPONSE_CACHE = Counter("gateway_response_cache_total", "Whole-response cache lookups", ["result"])
RATE_LIMITED_TOTAL = Counter(
    "gateway_rate_limited_total", "Requests refused by the gateway's own rate limits"
)
WEBHOOKS = Counter("gateway_webhooks_total", "Webhook deliveries", ["provider", "outcome"])
EVENTS_PUBLISHED = Counter("gateway_events_published_total", "Domain events published", ["type"])
OAUTH_GRANT_USABLE = Gauge(
    "gateway_oauth_grant_usable",
    "1 while the provider's OAuth grant yields access tokens, 0 once it is missing, revoked, "
    "rejected or unreadable (a person must reconnect the app)",
    ["source"],
)
OUTBOX_WRITES = Counter(
    "gateway_outbox_writes_total",
    "Provider writes by kind and outcome: direct (sent at once), queued (kept for the "
    "worker), delivered (by the worker), dead (dead-lettered), retried (by an operator)",
    ["kind", "outcome"],
)
OUTBOX_DEAD_LETTERS = Gauge(
    "gateway_outbox_dead_letters",
    "Writes in the outbox's dead-letter list, waiting for an operator (portal-gateway outbox)",
)
EVENTS_LAG = Gauge(
    "gateway_events_lag_seconds",
    "Age of the oldest event on the queue not yet acknowledged by a worker (0: none)",
    ["backend"],
)

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
# a caller's id is kept only when it is short and could not break a log line or a header
_CALLER_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_from(header: str | None) -> str:
    """The request's id: the caller's X-Request-Id when it is at most 64 characters of
    letters, digits and `._:-`, else a fresh one. (Log lines still pass it through
    redaction: a short JWT fits that alphabet.)"""
    if header is not None and _CALLER_REQUEST_ID.fullmatch(header):
        return header
    return token_hex(8)


class RequestNote:
    """What the access log line of one request reports besides status and duration."""

    __slots__ = ("cache", "document", "operation", "source_calls", "upstream_calls", "viewer")

    def __init__(self) -> None:
        self.viewer: str | None = None  # the viewer's subject, "service"; never a credential
        self.operation: str | None = None  # operationName as sent
        self.document: str | None = None  # the query text, for its name when none was sent
        self.cache: str | None = None  # "hit" when the whole response came from the cache
        self.upstream_calls = 0  # HTTP attempts to providers (gateway.upstream)
        self.source_calls = 0  # loader batches that reached an adapter (entity-cache misses)


request_note_var: contextvars.ContextVar[RequestNote | None] = contextvars.ContextVar(
    "request_note", default=None
)
access_log = logging.getLogger("gateway.access")
_FIRST_OPERATION = re.compile(
    r"^\s*(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)", re.MULTILINE
)


@functools.cache
def labelled(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, remembered: the hot paths count several times a request, and
    prometheus_client takes a lock and builds the label tuple on every `labels` call. Label
    values are a small fixed set (Prometheus needs that anyway); no metric here is ever
    cleared, so a remembered child stays the one /metrics reads."""
    return metric.labels(*values)


def count_upstream_call() -> None:
    """Count one HTTP attempt to a provider against the current request."""
    note = request_note_var.get()
    if note is not None:
        note.upstream_calls += 1


def count_source_call() -> None:
    """Count one adapter call made by a loader batch against the current request."""
    note = request_note_var.get()
    if note is not None:
        note.source_calls += 1


def log_request(note: RequestNote, status: int, seconds: float) -> None:
    """The request's access line: INFO, but DEBUG for whole-response cache hits.

    A JSON line costs about as much as the rest of a cache hit's work (DESIGN 12), and hits
    are already counted and timed by gateway_response_cache_total{result="hit"} and
    gateway_request_seconds; LOG_LEVEL=DEBUG shows them one by one.
    """
    level = logging.DEBUG if note.cache == "hit" else logging.INFO
    if status >= 500:
        level = logging.ERROR
    if not access_log.isEnabledFor(level):
        return
    operation = note.operation
    if operation is None and note.document:
        # read here, only for lines written: a cache hit never parses its document
        named = _FIRST_OPERATION.search(note.document)
        operation = named.group(1) if named else None
    access_log.log(
        level,
        "graphql %s %s",
        operation or "-",
        status,
        extra={
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "viewer_id": note.viewer,
            "operation_name": operation,
            "upstream_calls": note.upstream_calls,
            "source_calls": note.source_calls,
            "cache": note.cache or "miss",
        },
    )


_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on each record as its `request_id` field (unless the
    line names one itself), ahead of the RedactionFilter, so that the id is redacted like
    every other field before JsonFormatter writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "request_id" not in record.__dict__:
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id, extras.

    The request id is the record's `request_id` field (see RequestIdFilter), never read
    from the context here: that would be after redaction."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        if fields.get("request_id"):
            payload["request_id"] = fields["request_id"]
        trace_ids = tracing.current_trace_ids()
        if trace_ids is not None:
            payload["trace_id"], payload["span_id"] = trace_ids
        for key, value in fields.items():
            if key not in _RESERVED and not key.startswith("_") and key != "request_id":
                payload[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exc"] = record.exc_text
        try:
            return orjson.dumps(payload, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # what orjson refuses (integers past 64 bits) json still writes
            return json.dumps(payload, default=str)


def configure_logging(
    level: str = "INFO", settings: Settings | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    """JSON lines on stderr (or `stream`) for every logger, credentials redacted.

    The redaction filter knows every secret value of `settings` besides the patterns of
    gateway.redaction. Answers the handler it installed.
    """
    secrets: list[str] = []
    if settings is not None:
        secrets = settings_secrets(settings)
        if not settings.production:
            dev_secret = settings.dev_secret()  # the generated .dev-secret included
            if dev_secret:
                secrets.append(dev_secret)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())  # first: the id is a field the redaction sees
    handler.addFilter(RedactionFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO with its full URL, query string included, and some
    # providers take keys in the query string; the upstream client logs failed attempts
    # itself, without URLs. LOG_LEVEL=DEBUG does not bring these lines back: set the
    # "httpx" logger's level on purpose to see them.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # The Stripe SDK logs each request and answer at INFO (URLs with customer ids); the
    # upstream client's metrics and failure lines say the same without them. Set the
    # "stripe" logger's level, or STRIPE_LOG, on purpose to see them.
    logging.getLogger("stripe").setLevel(logging.WARNING)
    return handler
