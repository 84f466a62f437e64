"""`portal-gateway check`: the configuration, then one read-only call to each provider.

A source that defines `async def check(self) -> None` is asked through it (raising means
failed); any other gets a cheap read its protocol offers, for a key no provider holds, so a
"not found" answer proves the provider reachable and the credentials accepted. Billing is
asked for an email rather than an invoice id: adapters answer ids not of their provider's
form (Stripe's `in_...`) without calling it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gateway.domain import FileQuery
from gateway.errors import GatewayError, NotFound
from gateway.redaction import Redactor, settings_secrets
from gateway.redis_client import RedisClient, connect
from gateway.settings import Settings
from gateway.sources.registry import Sources, build_sources

__all__ = ["CheckResult", "configuration_problems", "run_checks"]

# Keys no provider holds: the read costs one call and finds nothing.
PROBE_ID = "0"
PROBE_EMAIL = "portal-gateway-check@example.invalid"
MAX_REASON = 300


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str  # "billing (stripe)", "redis"
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> str:
        return f"{self.name}: ok" if self.error is None else f"{self.name}: FAILED: {self.error}"


def configuration_problems(error: ValidationError) -> list[str]:
    """One line per invalid setting, named as its environment variable."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(p) for p in problem["loc"]).upper() or "SETTINGS"
        # the production check lists its refusals as "- ..." lines: one line each here too
        for part in str(problem["msg"]).splitlines():
            part = part.strip().removeprefix("- ")
            if part:
                lines.append(f"{where}: {part}")
    return lines


async def _probe(kind: str, source: Any) -> None:
    check = getattr(source, "check", None)
    if check is not None and inspect.iscoroutinefunction(check):
        await check()
        return
    results: Sequence[object]
    if kind == "crm":
        results = await source.customers([PROBE_ID])
    elif kind == "billing":
        results = await source.billing_ids_by_email([PROBE_EMAIL])
    elif kind == "helpdesk":
        results = await source.tickets([PROBE_ID])
    else:
        results = await source.file_pages([FileQuery(customer_id=PROBE_ID, first=1)])
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, NotFound):
            raise result


async def _ping(redis: RedisClient) -> None:
    await redis.ping()


def _reason(error: BaseException, redactor: Redactor, timeout: float) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(error, GatewayError):
        text = error.message
    else:
        detail = str(error)
        text = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    text = " ".join(redactor.text(text).split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


async def run_checks(settings: Settings, sources: Sources | None = None) -> list[CheckResult]:
    """Redis (when configured) and each configured provider, one result each, in order."""
    redactor = Redactor(settings_secrets(settings))
    timeout = settings.upstream_timeout + 1

    async def guarded(name: str, call: Any) -> CheckResult:
        try:
            async with asyncio.timeout(timeout):
                await call
        except Exception as error:
            return CheckResult(name, _reason(error, redactor, timeout))
        return CheckResult(name)

    # The adapters get Redis as the gateway gives it to them: QuickBooks and Xero keep their
    # rotating OAuth grant there, and a check that refreshed a grant of its own would
    # spend the refresh token the running gateway depends on.
    redis: RedisClient | None = None
    if settings.redis_url:
        redis = connect(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    own = sources is None
    try:
        if sources is None:
            try:
                sources = build_sources(settings, redis)
            except Exception as error:  # an adapter that cannot be built (missing settings)
                return [CheckResult("providers", _reason(error, redactor, timeout))]
        named: list[tuple[str, Any]] = []
        if redis is not None:
            named.append(("redis", _ping(redis)))
        for kind in ("crm", "billing", "helpdesk", "files"):
            source = getattr(sources, kind)
            named.append((f"{kind} ({source.name})", _probe(kind, source)))
        return list(await asyncio.gather(*(guarded(name, call) for name, call in named)))
    finally:
        if own and sources is not None:
            await sources.aclose()
        if redis is not None:
            await redis.aclose()
