"""Reading a verified body: each reader answers a value the domain models can hold, or
raises BadPayload naming the field and what was expected.

Every value a provider module puts into a domain event goes through one of these, so a
signed delivery with garbage in it is a 400 that blames the delivery, never an exception
that answers 500, which blames the gateway and asks for retries that fail the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gateway.webhooks.provider import BadPayload

__all__ = [
    "EARLIEST",
    "LATEST",
    "epoch_time",
    "iso_time",
    "json_body",
    "json_event",
    "optional_str",
    "require_int",
    "require_str",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The times a provider reports: none before unix time 0, and none within a day of
# datetime.max, so that whatever UTC offset a reader gives it stays representable.
EARLIEST = _EPOCH
LATEST = datetime(9999, 12, 31, tzinfo=UTC)  # exclusive
_LATEST_SECONDS = int((LATEST - _EPOCH).total_seconds())
_INT64 = 2**63


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
    """payload[key] as a non-empty string (integers accepted: ids are often numeric)."""
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise BadPayload(f"'{key}' is missing or not a string")
    return str(value)


def optional_str(payload: Mapping[str, Any], key: str) -> str | None:
    """payload[key] as a string; None when it is missing, null or empty."""
    value = payload.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadPayload(f"'{key}' is not a string: {value!r:.40}")
    return value


def require_int(payload: Mapping[str, Any], key: str) -> int:
    """payload[key] as an integer of 64 bits (amounts in minor units, counts)."""
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not -_INT64 <= value < _INT64:
        raise BadPayload(f"'{key}' is not a 64-bit integer: {value!r:.40}")
    return value


def epoch_time(value: Any, field: str, *, millis: bool = False) -> datetime:
    """Whole unix seconds (milliseconds with `millis`) as an aware UTC datetime."""
    unit = 1000 if millis else 1
    if isinstance(value, bool) or not isinstance(value, int):
        what = "milliseconds" if millis else "seconds"
        raise BadPayload(f"'{field}' is not a unix time in whole {what}: {value!r:.40}")
    if not 0 <= value < _LATEST_SECONDS * unit:
        raise BadPayload(f"'{field}' is not a time between 1970 and 9999: {value!r:.40}")
    return _EPOCH + (timedelta(milliseconds=value) if millis else timedelta(seconds=value))


def iso_time(value: Any, field: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime (one without an offset is taken as UTC)."""
    if not isinstance(value, str):
        raise BadPayload(f"'{field}' is not an ISO 8601 time: {value!r:.40}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadPayload(f"'{field}' is not an ISO 8601 time: {value!r:.40}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    # compared before converting: an offset can carry a time past datetime's range
    if not EARLIEST <= parsed < LATEST:
        raise BadPayload(f"'{field}' is not a time between 1970 and 9999: {value!r:.40}")
    return parsed.astimezone(UTC)
