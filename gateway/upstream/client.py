"""The HTTP client every provider adapter calls through (DESIGN sections 1, 8, 12).

One `UpstreamClient` per provider holds one pooled transport (aiohttp's client under httpx's
transport interface, gateway.upstream.transport) and puts every call under a deadline, the
provider's circuit breaker, its rate limiter and the retry policy of
`gateway.upstream.retry`, counting and logging each attempt.

Requests and answers are httpx's (`httpx.Request`, `httpx.Response`, `httpx.Auth`, its
exceptions). The client sends them to the transport itself rather than through
`httpx.AsyncClient`: what that client adds per call is what a provider call must not have
(a cookie jar shared by every customer, redirects, a second timeout machinery) or what is
done here already (retries, the deadline), and it cost ~50 us of CPU a call (DESIGN 12).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from gateway import tracing
from gateway.errors import IntegrationUnavailable
from gateway.observability import (
    UPSTREAM_REQUESTS,
    UPSTREAM_SECONDS,
    count_upstream_call,
    labelled,
    request_id_var,
)
from gateway.redis_client import RedisClient
from gateway.settings import Settings
from gateway.upstream.breaker import BreakerState, CircuitBreaker
from gateway.upstream.ratelimit import RateLimiter, SlotUnavailable
from gateway.upstream.retry import (
    backoff_delay,
    may_retry,
    parse_retry_after,
    parse_should_retry,
    retryable_status,
)
from gateway.upstream.transport import AiohttpTransport, AnswerTooLarge

__all__ = ["POOL_SIZE", "UpstreamClient"]

log = logging.getLogger("gateway.upstream")

# Connections kept per provider origin: both the keep-alive pool and the cap on concurrent
# calls to one origin; adapters already bound their fan-out, and a small pool is what keeps
# the per-call CPU low (DESIGN 12).
POOL_SIZE = 20
# Below the idle timeouts of the providers' load balancers (60 s and more), so the gateway
# closes an idle connection before the far end does and never writes into a dead socket.
KEEPALIVE_EXPIRY = 30.0
# Sent with every call unless the adapter sets its own.
_DEFAULT_HEADERS = {
    "User-Agent": "portal-gateway",
    "Accept": "*/*",
    "Accept-Encoding": "gzip, deflate",
}
# URL strings whose parsed form (base URL merged) each client remembers: parsing one costs
# ~40 us (httpx checks each character), and a provider is called on a few URLs again and again
_URLS_KEPT = 1024
# Methods whose request httpx sends without a body or a Content-Length when none is given.
_BODILESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
_NO_BODY = httpx.ByteStream(b"")


@dataclass(slots=True)
class _Failure:
    """One attempt that did not produce an answer to hand back."""

    outcome: str
    status: int | None = None
    # Whether another attempt could succeed, judged from the answer alone.
    retryable: bool = True
    retry_after: float | None = None
    # A 4xx the provider asked us to repeat (Stripe-Should-Retry: true): when attempts run
    # out it is still the provider's answer, so it goes back to the adapter.
    response: httpx.Response | None = None


class UpstreamClient:
    """Resilient HTTP calls to one provider: deadline, retries, breaker, rate limit, metrics."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        settings: Settings,
        redis: RedisClient | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Build the client of provider `name` ("stripe", "hubspot", ...).

        `redis` shares the rate limit with every replica; `headers` and `auth` apply to
        every call; `transport` replaces the gateway's own (tests only).
        """
        self.name = name
        self._settings = settings
        self.breaker = CircuitBreaker(
            name, failures=settings.breaker_failures, reset=settings.breaker_reset
        )
        self.limiter = RateLimiter(
            name,
            settings.rate_limit(name),
            key=f"{settings.cache_prefix}ratelimit:{name}",
            redis=redis,
        )
        self._transport: httpx.AsyncBaseTransport = transport or AiohttpTransport(
            max_connections=POOL_SIZE,
            keepalive_expiry=KEEPALIVE_EXPIRY,
            read_timeout=settings.upstream_timeout,
            max_response_bytes=settings.upstream_max_response_bytes,
        )
        # httpx's merge: a relative URL is appended to the base, whose path ends in "/"
        self._base = base_url if not base_url or base_url.endswith("/") else base_url + "/"
        self._urls: dict[str, httpx.URL] = {}
        self._headers = httpx.Headers({**_DEFAULT_HEADERS, **(headers or {})})
        self._auth = auth
        self._closed = False

    @property
    def breaker_state(self) -> BreakerState:
        """The provider's circuit breaker: "closed", "half_open" or "open"."""
        return self.breaker.state

    @property
    def closed(self) -> bool:
        """Whether `aclose` has run: the pooled connections are closed."""
        return self._closed

    async def aclose(self) -> None:
        """Close the pooled connections; the client cannot be used afterwards."""
        self._closed = True
        await self._transport.aclose()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        params: httpx.QueryParams | Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Call the provider within `settings.upstream_timeout` seconds, all attempts included.

        `operation` names the call in metrics and logs ("invoices.list"). Answers the
        response for 2xx, 3xx and 4xx other than 429; raises IntegrationUnavailable when
        the provider fails, throttles past the deadline, times out, or its breaker is open.
        A call is retried only when repeating it is harmless: an idempotent method, an
        `idempotency_key` (sent as `Idempotency-Key`), or `idempotent=True`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.upstream_timeout
        method = method.upper()
        attempts = (
            self._settings.retry_max_attempts
            if may_retry(method, idempotency_key=idempotency_key, idempotent=idempotent)
            else 1
        )
        send_headers = self._headers
        if headers or idempotency_key is not None:
            send_headers = send_headers.copy()
            send_headers.update(headers or {})
            if idempotency_key is not None:
                send_headers["Idempotency-Key"] = idempotency_key
        # built once: every attempt sends the same request (an auth flow signs each anew)
        if json is None and content is None and data is None and method in _BODILESS:
            # What httpx.Request would add is a Host header, which the transport writes from
            # the URL anyway; given the (empty) stream, httpx skips that header work, about
            # 7 us a call (DESIGN 12).
            request = httpx.Request(
                method, self._url(url, params), headers=send_headers, stream=_NO_BODY
            )
        else:
            request = httpx.Request(
                method,
                self._url(url, params),
                json=json,
                content=content,
                data=data,
                headers=send_headers,
            )
        attempt = 0
        while True:
            attempt += 1
            result = await self._attempt(request, operation, deadline)
            if isinstance(result, httpx.Response):
                return result
            delay: float | None = None
            if attempt < attempts and result.retryable:
                delay = backoff_delay(
                    attempt,
                    base=self._settings.retry_base_delay,
                    cap=self._settings.retry_max_delay,
                    retry_after=result.retry_after,
                )
                if loop.time() + delay >= deadline:
                    # The next attempt could not start before the deadline: answer now
                    # rather than sleep only to fail.
                    delay = None
            self._log_failure(operation, attempt, result, delay)
            if delay is None:
                if result.response is not None:
                    return result.response
                raise self._error(result)
            await asyncio.sleep(delay)

    async def _attempt(
        self, request: httpx.Request, operation: str, deadline: float
    ) -> httpx.Response | _Failure:
        """One attempt: breaker, rate-limit slot, HTTP exchange, accounting."""
        loop = asyncio.get_running_loop()
        try:
            probe = self.breaker.acquire()
        except IntegrationUnavailable:
            labelled(UPSTREAM_REQUESTS, self.name, operation, "breaker_open").inc()
            raise
        try:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise IntegrationUnavailable(self.name, f"{self.name} timed out")
            try:
                wait = await self.limiter.reserve(max_wait=remaining)
            except SlotUnavailable as exc:
                labelled(UPSTREAM_REQUESTS, self.name, operation, "throttled").inc()
                raise IntegrationUnavailable(
                    self.name,
                    f"{self.name} request budget is spent; try again later",
                    retry_after=exc.wait,
                ) from None
            if wait > 0:
                await asyncio.sleep(wait)
            started = loop.time()
            count_upstream_call()
            try:
                with tracing.client_span(self.name, operation, request.method) as span:
                    # the deadline bounds the whole exchange (the transport's read deadline,
                    # UPSTREAM_TIMEOUT too, never comes first)
                    async with asyncio.timeout_at(deadline):
                        response = await self._send(request)
                    tracing.set_http_status(span, response.status_code)
            except httpx.LocalProtocolError as exc:
                # refused before anything was sent (a header with CR or LF): ours to fix,
                # not the provider's failure (the probe is released below)
                labelled(UPSTREAM_REQUESTS, self.name, operation, "refused").inc()
                raise IntegrationUnavailable(
                    self.name, f"{self.name} request not sent: {exc}", retryable=False
                ) from None
            except _TRANSPORT_ERRORS as exc:
                outcome = _transport_outcome(exc)
                self.breaker.record_failure(probe)
                self._count(operation, outcome, loop.time() - started)
                # the same answer would be too large again
                return _Failure(outcome, retryable=outcome != "too_large")
        except BaseException:
            # Throttled, cancelled or a programming error: the provider was never judged.
            self.breaker.release(probe)
            raise
        return self._judge(response, operation, probe, loop.time() - started)

    def _url(self, url: str, params: Any) -> httpx.URL:
        """`url` merged with the base URL as httpx merges it, `params` as its query (they
        replace one in `url`, as in httpx). Parsed once: a URL without parameters once per
        string, one with them in the same parse (httpx.Request's `params` would parse the
        merged URL a second time)."""
        if params is not None:
            return httpx.URL(self._absolute(url), params=params)
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= _URLS_KEPT:
                self._urls.clear()  # paths with ids in them: keep the memo bounded
            parsed = self._urls[url] = httpx.URL(self._absolute(url))
        return parsed

    def _absolute(self, url: str) -> str:
        if url.startswith(("http://", "https://")) or not self._base:
            return url
        return self._base + url.lstrip("/")

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """One exchange through the transport, with the client's httpx.Auth flow if any."""
        if self._closed:
            raise RuntimeError(f"the {self.name} client is closed")
        auth = self._auth
        if auth is None:
            return await self._transport.handle_async_request(request)
        flow = auth.async_auth_flow(request)
        try:
            request = await flow.__anext__()
            while True:
                response = await self._transport.handle_async_request(request)
                try:
                    request = await flow.asend(response)
                except StopAsyncIteration:
                    return response
        finally:
            await flow.aclose()

    def _judge(
        self, response: httpx.Response, operation: str, probe: bool, seconds: float
    ) -> httpx.Response | _Failure:
        """Account for one answer and decide whether it goes back to the adapter."""
        status = response.status_code
        if status >= 500:
            self.breaker.record_failure(probe)
            outcome = "server_error"
        else:
            # Any answer below 500, a 429 included, shows the provider is up.
            self.breaker.record_success(probe)
            outcome = "ok" if status < 400 else "rate_limited" if status == 429 else "client_error"
        self._count(operation, outcome, seconds)
        if status < 400:
            return response
        should_retry = parse_should_retry(response.headers.get("stripe-should-retry"))
        retryable = retryable_status(status, should_retry)
        provider_answer = status < 500 and status != 429
        if provider_answer and not retryable:
            return response
        return _Failure(
            outcome,
            status,
            retryable=retryable,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            response=response if provider_answer else None,
        )

    def _count(self, operation: str, outcome: str, seconds: float) -> None:
        labelled(UPSTREAM_REQUESTS, self.name, operation, outcome).inc()
        labelled(UPSTREAM_SECONDS, self.name, operation).observe(seconds)

    def _log_failure(
        self, operation: str, attempt: int, failure: _Failure, retry_in: float | None
    ) -> None:
        # Names, status and counts only: URLs (query strings carry keys for some
        # providers), headers and bodies stay out of logs.
        log.warning(
            "%s %s attempt %d failed: %s",
            self.name,
            operation,
            attempt,
            failure.outcome if failure.status is None else f"HTTP {failure.status}",
            extra={
                "provider": self.name,
                "operation": operation,
                "status": failure.status,
                "attempt": attempt,
                "outcome": failure.outcome,
                "retry_in": None if retry_in is None else round(retry_in, 3),
                "request_id": request_id_var.get(),
            },
        )

    def _error(self, failure: _Failure) -> IntegrationUnavailable:
        name = self.name
        if failure.outcome == "timeout":
            message = f"{name} timed out"
        elif failure.outcome == "too_large":
            message = f"{name} answered more than the gateway reads"
        elif failure.outcome == "connection_error":
            message = f"{name} could not be reached"
        elif failure.status == 429:
            message = f"{name} is rate limiting the gateway"
        else:
            message = f"{name} is unavailable (HTTP {failure.status})"
        return IntegrationUnavailable(
            name, message, retryable=failure.retryable, retry_after=failure.retry_after
        )


# A transport failure: our deadline (TimeoutError) or the transport's (httpx's exceptions).
_TRANSPORT_ERRORS = (TimeoutError, httpx.RequestError)


def _transport_outcome(exc: BaseException) -> str:
    """The metric outcome of an attempt that raised: "timeout", "too_large" (an answer past
    UPSTREAM_MAX_RESPONSE_BYTES) or "connection_error"."""
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return "timeout"
    if isinstance(exc, AnswerTooLarge):
        return "too_large"
    return "connection_error"
