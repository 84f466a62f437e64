"""What every provider module implements, and what it is handed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from gateway.domain import DomainEvent

__all__ = [
    "BadPayload",
    "Incoming",
    "InvalidSignature",
    "TimedWebhook",
    "WebhookProvider",
    "json_body",
    "json_event",
    "parse_time",
    "require_str",
]


class InvalidSignature(Exception):
    """Missing, forged or stale signature: the provider answers its reject status."""


class BadPayload(Exception):
    """Signed, but not a payload we understand (malformed JSON, missing fields): 400."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """One delivery as received: nothing parsed yet."""

    method: str
    url: str  # the public URL the provider called (PUBLIC_BASE_URL behind a proxy)
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    now: float  # unix time of arrival


class WebhookProvider(Protocol):
    name: str
    reject_status: int  # for a bad signature: 400, or 401 for Xero
    quiet: bool  # answer with empty bodies (Xero's intent-to-receive checks them)

    def verify(self, incoming: Incoming) -> None:
        """Raises InvalidSignature unless the raw body is signed by the provider, in time."""
        ...

    def parse(self, body: bytes) -> list[DomainEvent]:
        """The domain events of a verified body; raises BadPayload."""
        ...


class TimedWebhook:
    """A provider that signs a timestamp with one secret (Stripe, HubSpot, Zendesk): a
    delivery signed more than `tolerance` seconds from its arrival is refused."""

    def __init__(self, secret: str, tolerance: float = 300) -> None:
        self._secret = secret
        self.tolerance = tolerance


def json_body(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadPayload("the body is not valid JSON") from None


def json_event(body: bytes, what: str) -> tuple[dict[str, Any], str]:
    """A delivery of one JSON object with a `type`: the object and its type; BadPayload
    naming `what` ("a Stripe event") when the body is no JSON object."""
    payload = json_body(body)
    if not isinstance(payload, dict):
        raise BadPayload(f"{what} is a JSON object")
    return payload, require_str(payload, "type")


def require_str(payload: Mapping[str, Any], key: str) -> str:
    """payload[key] as a non-empty string (numbers accepted: ids are often numeric)."""
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise BadPayload(f"'{key}' is missing or not a string")
    return str(value)


def parse_time(value: Any, *, millis: bool = False) -> datetime:
    """A provider timestamp (unix seconds, unix milliseconds or ISO 8601) as aware UTC."""
    if isinstance(value, bool):
        raise BadPayload("a timestamp is not a boolean")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000 if millis else value, UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise BadPayload(f"{value!r} is not an ISO 8601 time") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise BadPayload("a timestamp is missing")
