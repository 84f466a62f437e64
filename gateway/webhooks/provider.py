"""What every provider module implements, and what it is handed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.domain import DomainEvent

__all__ = [
    "BadPayload",
    "Incoming",
    "InvalidSignature",
    "TimedWebhook",
    "WebhookProvider",
]


class InvalidSignature(Exception):
    """Missing, forged or stale signature: the provider answers its reject status."""


class BadPayload(Exception):
    """Signed, but not a payload we understand (malformed JSON, missing fields, values of
    the wrong type or out of range): 400, as a retry would fail the same way."""


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
