"""fanout.batched: keys fetched a batch at a time, the answers merged by key."""

from __future__ import annotations

import asyncio

from gateway.sources.fanout import batched


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
