"""Dead letters: a write Zendesk refuses (422) ends in the dead-letter list with its reason,
shown to the customer and to `portal-gateway outbox list`; `retry` delivers it once the
cause is fixed, `drop` forgets it. Nothing is silently dropped."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway.domain import DeliveryState
from gateway.events.worker import open_worker
from gateway.settings import Settings
from tests.conftest import GatewayServer
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.zendesk import FakeZendesk
from tests.outbox.conftest import environment
from tests.outbox.helpers import Person, create, my_tickets, seed

# the outbox's keys and dead-letter index, on one node and across a cluster's slots
pytestmark = pytest.mark.single_and_cluster

REFUSED = "The help desk did not accept your request."


def outbox_command(deployment: dict[str, Any], *args: str, cwd: Path) -> tuple[int, str, str]:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("portal-gateway")), "outbox", *args],
        env={**environment(deployment), "PATH": "/usr/bin:/bin"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


async def settle(settings: Settings, gateway: GatewayServer, person: Person, write_id: str) -> Any:
    """Run a worker until the write is delivered or dead; answers its record."""
    store = gateway.gateway.services.outbox.store
    stop = asyncio.Event()
    async with open_worker(settings, consumer="admin-test") as worker:
        task = asyncio.create_task(worker.run(stop))
        state: list[Any] = [None]

        async def done() -> bool:
            # the store is bound to the gateway's own loop
            read = store.get(person.crm_id, write_id)
            state[0] = await asyncio.to_thread(gateway.server.call, read)
            return state[0] is not None and state[0].state is not DeliveryState.QUEUED

        deadline = asyncio.get_running_loop().time() + 20
        while not await done():
            assert asyncio.get_running_loop().time() < deadline, "not settled in time"
            await asyncio.sleep(0.05)
        stop.set()
        await task
    return state[0]


def dead_total() -> float:
    value = REGISTRY.get_sample_value(
        "gateway_outbox_writes_total", {"kind": "create_ticket", "outcome": "dead"}
    )
    return value or 0.0


async def test_a_refused_write_is_a_dead_letter_the_customer_and_operator_see(
    gateway: GatewayServer,
    hubspot: FakeHubSpot,
    zendesk: FakeZendesk,
    make_settings: Callable[..., Settings],
    deployment: dict[str, Any],
    tmp_path: Path,
) -> None:
    ada = seed(hubspot, zendesk)
    settings = make_settings(**deployment)
    zendesk.fail("tickets_create", 503, times=None)
    kept = create(gateway, ada, "Refused later")["ticket"]
    write_id = kept["delivery"]["writeId"]
    zendesk.clear_faults()
    zendesk.fail("tickets_create", 422, times=None)  # back, and refusing it
    dead_before = dead_total()

    dead = await settle(settings, gateway, ada, write_id)
    assert dead.state is DeliveryState.FAILED
    assert dead.reason == REFUSED
    assert dead_total() == dead_before + 1
    [shown] = my_tickets(gateway, ada)
    assert shown["id"] == kept["id"]
    assert shown["delivery"] == {
        "writeId": write_id,
        "state": "FAILED",
        "reason": REFUSED,
        "deliveredAt": None,
    }

    name = f"{ada.crm_id}/{write_id}"
    code, out, _ = await asyncio.to_thread(outbox_command, deployment, "list", cwd=tmp_path)
    assert code == 0
    [line] = out.splitlines()
    assert line.startswith(f"{name}  create_ticket  accepted ")
    assert line.endswith(f"attempts 1  {REFUSED}")

    # the cause fixed, the operator retries it: delivered, once
    zendesk.clear_faults()
    code, out, _ = await asyncio.to_thread(outbox_command, deployment, "retry", name, cwd=tmp_path)
    assert (code, out.strip()) == (0, f"queued again: {name}")
    assert my_tickets(gateway, ada)[0]["delivery"]["state"] == "QUEUED"
    delivered = await settle(settings, gateway, ada, write_id)
    assert delivered.state is DeliveryState.DELIVERED
    [made] = zendesk.tickets_of(ada.zendesk_id)
    assert delivered.result_id == str(made["id"])
    code, out, _ = await asyncio.to_thread(outbox_command, deployment, "list", cwd=tmp_path)
    assert out.strip() == "no dead letters"

    # a retry of something that is no dead letter is refused, and says so
    code, _, err = await asyncio.to_thread(outbox_command, deployment, "retry", name, cwd=tmp_path)
    assert (code, err.strip()) == (1, f"outbox: no dead letter {name}")


async def test_dropping_a_dead_letter_forgets_it_for_the_customer_too(
    gateway: GatewayServer,
    hubspot: FakeHubSpot,
    zendesk: FakeZendesk,
    make_settings: Callable[..., Settings],
    deployment: dict[str, Any],
    tmp_path: Path,
) -> None:
    grace = seed(hubspot, zendesk, 1)
    zendesk.fail("tickets_create", 503, times=None)
    write_id = create(gateway, grace, "Never mind")["ticket"]["delivery"]["writeId"]
    zendesk.clear_faults()
    zendesk.fail("tickets_create", 422, times=None)
    await settle(make_settings(**deployment), gateway, grace, write_id)
    name = f"{grace.crm_id}/{write_id}"

    code, out, _ = await asyncio.to_thread(outbox_command, deployment, "drop", name, cwd=tmp_path)
    assert (code, out.strip()) == (0, f"dropped: {name} (create_ticket)")
    assert my_tickets(gateway, grace) == []
    code, out, _ = await asyncio.to_thread(outbox_command, deployment, "list", cwd=tmp_path)
    assert out.strip() == "no dead letters"
    assert zendesk.tickets_of(grace.zendesk_id) == []


async def test_a_write_still_undeliverable_after_its_attempts_or_age_is_a_dead_letter(
    gateway: GatewayServer,
    hubspot: FakeHubSpot,
    zendesk: FakeZendesk,
    make_settings: Callable[..., Settings],
    deployment: dict[str, Any],
) -> None:
    ada, grace = seed(hubspot, zendesk, 0), seed(hubspot, zendesk, 1)
    zendesk.fail("tickets_create", 503, times=None)  # down throughout
    tried = create(gateway, ada, "Tried")["ticket"]["delivery"]["writeId"]
    zendesk.clear_faults()
    zendesk.fail("tickets_create", 429, times=None)  # with Retry-After: 1
    zendesk.reset_calls()
    dead = await settle(make_settings(**deployment, outbox_max_attempts=2), gateway, ada, tried)
    assert (dead.state, dead.attempts) == (DeliveryState.FAILED, 2)
    assert dead.reason == (
        "The help desk could not be reached, so your request was not sent: it was tried 2 times."
    )
    # each delivery's attempts, and the two deliveries, a Retry-After apart
    arrivals = [call.at for call in zendesk.calls_to("tickets_create")]
    assert len(arrivals) == 4
    assert all(later - earlier >= 0.95 for earlier, later in itertools.pairwise(arrivals))

    aged = create(gateway, grace, "Aged")["ticket"]["delivery"]["writeId"]
    await asyncio.sleep(1.1)
    dead = await settle(make_settings(**deployment, outbox_max_age=1), gateway, grace, aged)
    assert dead.state is DeliveryState.FAILED
    assert dead.attempts == 0  # never sent: too old when its turn came
    assert dead.reason.endswith("it waited longer than 1 second.")
    assert zendesk.tickets_of(ada.zendesk_id) == zendesk.tickets_of(grace.zendesk_id) == []
