"""`portal-gateway forget --customer ID` (gateway/forget.py) against a running gateway's Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from gateway.cli import main
from gateway.domain import QueuedWrite, TicketDraft, WriteKind
from gateway.outbox import new_write_id
from gateway.redis_client import blocking_client
from tests.conftest import DATA_KEY, GatewayServer
from tests.events.clients import INVOICE_UPDATED, GraphQLSocket
from tests.test_data_at_rest import PORTAL_HOME, STAFF_PAGE, everything_stored, ok, unlink

pytestmark = pytest.mark.single_and_cluster


def report(output: str) -> dict[str, int]:
    lines = output.strip().splitlines()
    return {
        kind.strip(): int(count) for kind, _, count in (line.rpartition(": ") for line in lines[1:])
    }


async def test_forget_erases_the_customer_and_says_what_it_removed(
    start: Callable[..., GatewayServer],
    redis_url: str,
    cache_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway = start(redis_url=redis_url, cache_prefix=cache_prefix)
    unlink(gateway, "1002")  # its billing and help-desk ids are found by email: links
    for variable, value in {
        "REDIS_URL": redis_url,
        "CACHE_PREFIX": cache_prefix,
        "DATA_ENCRYPTION_KEYS": DATA_KEY,
    }.items():
        monkeypatch.setenv(variable, value)
    store = blocking_client(redis_url)
    try:
        # a ticket Grace wrote while the help desk was down, kept in the outbox
        kept = QueuedWrite(
            id=new_write_id(),
            kind=WriteKind.CREATE_TICKET,
            customer_id="1002",
            seq=0,
            accepted_at=datetime.now(UTC),
            idempotency_key="createTicket:1002:m-1",
            requester_id="900002",
            draft=TicketDraft(subject="Lost card", description="Please block it"),
        )
        gateway.server.call(gateway.gateway.services.outbox.queue(kept, None))
        async with GraphQLSocket.open(gateway.url, gateway.token("1002")) as grace:
            await grace.subscribe("inv", INVOICE_UPDATED)
            ok(gateway.query(PORTAL_HOME, token=gateway.token("1002")))
            ok(gateway.query(PORTAL_HOME, token=gateway.token("1001")))
            staff = gateway.token(None, roles=["staff"])
            ok(gateway.query(STAFF_PAGE, {"ids": ["1001", "1002"]}, token=staff))
            everything_stored(store, cache_prefix)  # the fills have landed

            assert await asyncio.to_thread(main, ["forget", "--customer", "1002"]) == 0

            out = capsys.readouterr().out
            assert out.startswith("forgot customer 1002: ")
            removed = report(out)
            assert removed["entities"] >= 4  # record, invoices, subscriptions, tickets, files
            assert removed["stale copies"] >= 4
            assert removed["links"] == 4  # billing and help desk by email, fresh and stale
            assert removed["response pages"] == 2  # Grace's home and the staff page
            assert removed["replicas told to end live subscriptions"] == 1
            assert removed["outbox writes"] == 1
            assert removed["queued events"] == 1  # the kept write's message
            assert await grace.receive() == {"type": "complete", "id": "inv"}

        keys = [key for key, _value in everything_stored(store, cache_prefix)]
        assert not any("1002" in key or "cus_sbx0002" in key or "900002" in key for key in keys)
        assert any(key.startswith(f"{cache_prefix}resp:customer:1001:") for key in keys)

        # a second run finds nothing left
        assert await asyncio.to_thread(main, ["forget", "--customer", "1002"]) == 0
        again = report(capsys.readouterr().out)
        assert sum(n for kind, n in again.items() if not kind.startswith("replicas")) == 0
    finally:
        store.close()


def test_forget_without_redis_says_why_it_cannot(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("DATA_ENCRYPTION_KEYS", DATA_KEY)
    assert main(["forget", "--customer", "1002"]) == 1
    assert "REDIS_URL is unset" in capsys.readouterr().err
