"""HMAC-SHA256 signatures compared in constant time, and replay windows."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from gateway.webhooks.provider import Incoming, InvalidSignature

__all__ = [
    "check_any",
    "check_body_signature",
    "check_window",
    "hmac_base64",
    "hmac_hex",
    "signed_unix_time",
]

# unix time in milliseconds until the year 2286; anything longer is no time a provider sent
_MAX_DIGITS = 13


def hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def hmac_base64(secret: str, message: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def check_any(candidates: Sequence[str], expected: str) -> None:
    """Raises unless one candidate equals `expected`; every candidate is compared, so the
    time taken says nothing about which one (or how much of one) matched."""
    wanted = expected.encode()
    matches = [hmac.compare_digest(c.strip().encode(), wanted) for c in candidates]
    if not any(matches):
        raise InvalidSignature("signature does not match")


def check_body_signature(incoming: Incoming, header: str, secret: str) -> None:
    """Raises unless `header` holds the base64 HMAC-SHA256 of the body alone with `secret`
    (no timestamp is signed: the event-id dedupe stops replays)."""
    signature = incoming.headers.get(header, "")
    if not signature:
        raise InvalidSignature(f"missing {header}")
    check_any([signature], hmac_base64(secret, incoming.body))


def signed_unix_time(text: str, *, millis: bool = False) -> float:
    """A signed timestamp header of unix seconds (milliseconds with `millis`) as seconds;
    InvalidSignature unless it is at most 13 ASCII digits (str.isdigit alone passes "²",
    which int() refuses, and numbers too long for int() or for a float)."""
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        raise InvalidSignature("missing or malformed signature timestamp")
    return int(text) / 1000 if millis else int(text)


def check_window(timestamp: float, now: float, tolerance: float) -> None:
    """Raises unless the signed timestamp is within `tolerance` seconds of now (either way)."""
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature("timestamp outside the replay window")
