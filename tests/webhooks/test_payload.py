"""The readers every provider module puts a payload's values through: what they accept,
where their ranges end, and that a refusal names the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.webhooks.payload import (
    EARLIEST,
    LATEST,
    epoch_time,
    iso_time,
    optional_str,
    require_int,
)
from gateway.webhooks.provider import BadPayload

LAST_SECOND = int((LATEST - EARLIEST).total_seconds()) - 1


def test_epoch_times_from_1970_to_the_day_before_9999_12_31_are_read_as_utc() -> None:
    assert epoch_time(0, "created") == datetime(1970, 1, 1, tzinfo=UTC)
    assert epoch_time(1_764_300_000, "created") == datetime(2025, 11, 28, 3, 20, tzinfo=UTC)
    assert epoch_time(1_764_300_000_123, "occurredAt", millis=True) == datetime(
        2025, 11, 28, 3, 20, 0, 123_000, tzinfo=UTC
    )
    assert epoch_time(LAST_SECOND, "created") == LATEST - timedelta(seconds=1)
    assert epoch_time(LAST_SECOND * 1000 + 999, "t", millis=True) < LATEST


@pytest.mark.parametrize(
    ("value", "millis"),
    [
        (-1, False),
        (LAST_SECOND + 1, False),
        ((LAST_SECOND + 1) * 1000, True),
        (2**63, False),
        (1e20, False),  # a float, however whole
        (1_764_300_000.0, False),
        (float("inf"), False),
        (float("nan"), True),
        ("1764300000", False),
        (True, False),
        (None, False),
    ],
)
def test_epoch_times_out_of_range_or_not_whole_numbers_are_bad_payloads(
    value: Any, millis: bool
) -> None:
    with pytest.raises(BadPayload, match="'created'"):
        epoch_time(value, "created", millis=millis)


def test_iso_times_are_read_as_utc() -> None:
    assert iso_time("2026-01-05T09:00:00+02:00", "time") == datetime(2026, 1, 5, 7, tzinfo=UTC)
    assert iso_time("2026-11-28T04:00:00.000", "time") == datetime(2026, 11, 28, 4, tzinfo=UTC)
    assert iso_time("1970-01-01T00:00:00Z", "time") == EARLIEST
    assert iso_time("9999-12-30T23:59:59Z", "time") == LATEST - timedelta(seconds=1)


@pytest.mark.parametrize(
    "value",
    [
        "99999-01-01T00:00:00Z",
        "2024-13-45",
        "1e300",
        "",
        "1969-12-31T23:59:59Z",
        "9999-12-31T00:00:00Z",
        "9999-12-30T23:00:00-05:00",  # 9999-12-31 once in UTC
        "0001-01-01T00:00:00+05:00",
        1_764_300_000,
        None,
    ],
)
def test_iso_times_out_of_range_or_malformed_are_bad_payloads(value: Any) -> None:
    with pytest.raises(BadPayload, match="'time'"):
        iso_time(value, "time")


def test_integers_are_64_bits_and_strings_are_strings() -> None:
    assert require_int({"total": 2**63 - 1}, "total") == 2**63 - 1
    assert require_int({"total": -(2**63)}, "total") == -(2**63)
    for value in [2**63, -(2**63) - 1, 2000.0, "2000", False, None]:
        with pytest.raises(BadPayload, match="'total'"):
            require_int({"total": value}, "total")
    assert optional_str({"currency": "usd"}, "currency") == "usd"
    assert optional_str({"currency": ""}, "currency") is None
    assert optional_str({}, "currency") is None
    with pytest.raises(BadPayload, match="'currency'"):
        optional_str({"currency": 840}, "currency")
