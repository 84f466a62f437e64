"""The error codes of DESIGN section 7 and their GraphQL extensions."""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadUserInput",
    "BodyTimeout",
    "Forbidden",
    "GatewayError",
    "IntegrationUnavailable",
    "NotFound",
    "QueryTooComplex",
    "RateLimited",
    "RequestRefused",
    "Unauthenticated",
]


class GatewayError(Exception):
    """An error whose message is safe to show to the caller."""

    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = {k: v for k, v in extensions.items() if v is not None}

    @property
    def extensions(self) -> dict[str, Any]:
        return {"code": self.code, **self.extra}


class Unauthenticated(GatewayError):
    code = "UNAUTHENTICATED"


class Forbidden(GatewayError):
    code = "FORBIDDEN"


class NotFound(GatewayError):
    code = "NOT_FOUND"

    def __init__(self, message: str = "not found") -> None:
        super().__init__(message)


class BadUserInput(GatewayError):
    code = "BAD_USER_INPUT"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, field=field)


class IntegrationUnavailable(GatewayError):
    """A provider is down, timed out, answered garbage, or its breaker is open."""

    code = "INTEGRATION_UNAVAILABLE"

    def __init__(
        self,
        source: str,
        message: str | None = None,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message or f"{source} is unavailable",
            source=source,
            retryable=retryable,
            retryAfter=None if retry_after is None else round(retry_after, 3),
        )
        self.source = source
        self.retryable = retryable
        self.retry_after = retry_after


class RateLimited(GatewayError):
    code = "RATE_LIMITED"

    def __init__(self, retry_after: float) -> None:
        super().__init__("rate limit exceeded", retryAfter=round(retry_after, 3))
        self.retry_after = retry_after


class QueryTooComplex(GatewayError):
    code = "QUERY_TOO_COMPLEX"

    def __init__(self, message: str, limit: int, actual: int) -> None:
        super().__init__(message, limit=limit, actual=actual)


class RequestRefused(Exception):
    """A request refused before GraphQL execution: answered with its HTTP status and its
    errors (one, or the list a parse or validation made), on every transport."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str = "BAD_REQUEST",
        *,
        errors: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after
        self.errors = errors or [{"message": message, "extensions": {"code": code, **extensions}}]

    @classmethod
    def of(cls, status: int, error: GatewayError) -> RequestRefused:
        """A gateway error (UNAUTHENTICATED, RATE_LIMITED, QUERY_TOO_COMPLEX...) as a refusal."""
        return cls(
            status,
            error.message,
            error.code,
            retry_after=getattr(error, "retry_after", None),
            **error.extra,
        )


class BodyTimeout(RequestRefused):
    """The request body did not arrive in time (HTTP_BODY_TIMEOUT): answered 408, and the
    connection closed, since the rest of the body may still be on its way."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s")
