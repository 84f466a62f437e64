"""fanout: keys fetched a batch at a time, the answers merged by key; chunks spread evenly;
calls at once as many as the provider's budget allows."""

from __future__ import annotations

import asyncio

import pytest

from gateway.settings import Settings
from gateway.sources.fanout import batched, chunks, fanout_limit, spread


async def test_answers_merge_by_key_and_a_failed_batch_fails_only_its_keys() -> None:
    in_flight, most = 0, 0

    async def fetch(batch: list[int]) -> dict[int, str]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        if 4 in batch:
            raise ConnectionError("down")
        return {key: f"v{key}" for key in batch if key != 1}  # 1: the provider knows no such

    found = await batched(list(range(7)), 2, fetch, concurrency=2)

    assert {k: v for k, v in found.items() if isinstance(v, str)} == {
        0: "v0",
        2: "v2",
        3: "v3",
        6: "v6",
    }
    assert [type(found[k]) for k in (4, 5)] == [ConnectionError, ConnectionError]
    assert 1 not in found
    assert most == 2  # 4 batches, at most 2 at once


def test_spread_makes_as_few_chunks_as_chunks_does_but_even() -> None:
    values = list(range(50))
    spread_out = spread(values, 8)
    assert [len(chunk) for chunk in spread_out] == [8, 7, 7, 7, 7, 7, 7]
    assert [v for chunk in spread_out for v in chunk] == values
    assert len(spread_out) == len(chunks(values, 8))
    assert spread(values, 100) == [values]
    assert spread([], 8) == []


@pytest.mark.parametrize(
    ("provider", "configured", "expected"),
    [
        ("stripe", None, 20),  # 25 a second: the whole pool
        ("zendesk", None, 11),  # 700 a minute
        ("xero", None, 1),  # 60 a minute
        ("zendesk", "6000/60s", 20),
        ("stripe", "5/1s", 5),
    ],
)
def test_fanout_follows_the_providers_budget(
    provider: str, configured: str | None, expected: int
) -> None:
    settings = Settings(_env_file=None, **{f"rate_limit_{provider}": configured})  # type: ignore[call-arg]
    assert fanout_limit(settings, provider) == expected
