"""TurnBatch: what one event-loop turn submits is served by one call."""

from __future__ import annotations

import asyncio

import pytest

from gateway.turns import TurnBatch


async def test_each_caller_gets_its_own_answer_from_one_call_per_turn() -> None:
    served: list[list[int]] = []

    async def serve(items: list[int]) -> list[int]:
        served.append(items)
        await asyncio.sleep(0)
        return [item * 10 for item in items]

    turn: TurnBatch[int, int] = TurnBatch(serve)
    assert await asyncio.gather(*(turn.submit(n) for n in range(4))) == [0, 10, 20, 30]
    assert await turn.submit(7) == 70
    assert served == [[0, 1, 2, 3], [7]]


async def test_a_failed_call_fails_every_caller_of_its_turn_and_not_the_next() -> None:
    failing = True

    async def serve(items: list[str]) -> list[str]:
        if failing:
            raise ConnectionError("down")
        return items

    turn: TurnBatch[str, str] = TurnBatch(serve)
    results = await asyncio.gather(turn.submit("a"), turn.submit("b"), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    failing = False
    assert await turn.submit("c") == "c"


async def test_a_wrong_number_of_answers_is_an_error_not_a_misrouted_answer() -> None:
    async def serve(items: list[int]) -> list[int]:
        return items[:-1]

    turn: TurnBatch[int, int] = TurnBatch(serve)
    with pytest.raises(RuntimeError, match="served 1 answers for 2 items"):
        await asyncio.gather(turn.submit(1), turn.submit(2))


async def test_a_cancelled_caller_leaves_the_others_answered() -> None:
    release = asyncio.Event()

    async def serve(items: list[int]) -> list[int]:
        await release.wait()
        return items

    turn: TurnBatch[int, int] = TurnBatch(serve)
    gone = asyncio.create_task(turn.submit(1))
    kept = asyncio.create_task(turn.submit(2))
    await asyncio.sleep(0.01)
    gone.cancel()
    release.set()
    assert await kept == 2
    with pytest.raises(asyncio.CancelledError):
        await gone
