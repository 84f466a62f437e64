"""A provider's HTTP answers as an adapter reads them: bodies decoded into msgspec structs,
refusals logged and turned into IntegrationUnavailable, in the provider's name."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

import httpx
import msgspec

from gateway.errors import IntegrationUnavailable

__all__ = ["ProviderAnswers", "decode_or_none"]

T = TypeVar("T")


def decode_or_none(response: httpx.Response, kind: type[T]) -> T | None:
    """The body as `kind`, None when it is not one (an error body of another shape)."""
    try:
        return msgspec.json.decode(response.content, type=kind)
    except msgspec.DecodeError:
        return None


class ProviderAnswers:
    """Reads the answers of one provider; logs through the adapter's logger."""

    def __init__(self, provider: str, log: logging.Logger) -> None:
        self.provider = provider
        self._log = log

    def decode(self, response: httpx.Response, kind: type[T], operation: str) -> T:
        """The body as `kind`; IntegrationUnavailable (logged) when it is not one."""
        try:
            return msgspec.json.decode(response.content, type=kind)
        except msgspec.DecodeError:  # ValidationError included: a shape we do not know
            self._log.warning(
                "%s answered an unreadable body",
                self.provider,
                extra={
                    "provider": self.provider,
                    "operation": operation,
                    "status": response.status_code,
                },
            )
            raise IntegrationUnavailable(
                self.provider, f"{self.provider} answered something the gateway could not read"
            ) from None

    def log_refusal(
        self, response: httpx.Response, operation: str, fields: Mapping[str, Any]
    ) -> None:
        """One warning for an answer the adapter cannot use; `fields` are what of the
        provider's error is safe to log."""
        self._log.warning(
            "%s %s answered HTTP %d",
            self.provider,
            operation,
            response.status_code,
            extra={
                "provider": self.provider,
                "operation": operation,
                "status": response.status_code,
                **fields,
            },
        )

    def refused(self, status: int) -> IntegrationUnavailable:
        """The error for an answer that says our request or our credentials are wrong."""
        if status in (401, 403):
            return IntegrationUnavailable(
                self.provider,
                f"{self.provider} rejected the gateway's credentials",
                retryable=False,
            )
        return IntegrationUnavailable(
            self.provider, f"{self.provider} refused the request (HTTP {status})", retryable=False
        )
