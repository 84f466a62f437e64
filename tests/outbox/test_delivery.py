"""The outbox end to end on real Redis (and once on RabbitMQ): a ticket written while the
fake Zendesk is down is answered QUEUED, listed as pending, and delivered exactly once by
`portal-gateway worker` processes, even one killed between Zendesk's answer and its record."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika

from gateway.domain import DeliveryState
from gateway.events.worker import open_worker
from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway
from tests.events.clients import (
    TICKET_UPDATED,
    GraphQLSocket,
    _Sink,
    gateway_process,
    wait_for,
    wait_for_async,
)
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.zendesk import FakeZendesk
from tests.outbox.conftest import environment
from tests.outbox.helpers import TICKET, ask, create, my_tickets, seed


def delivered(gateway: GatewayServer, crm_id: str, write_id: str) -> bool:
    store = gateway.gateway.services.outbox.store
    write = gateway.server.call(store.get(crm_id, write_id))
    return write is not None and write.state is DeliveryState.DELIVERED


async def test_a_ticket_written_while_zendesk_is_down_is_kept_then_delivered_once(
    gateway: GatewayServer,
    hubspot: FakeHubSpot,
    zendesk: FakeZendesk,
    deployment: dict[str, Any],
    sink: tuple[str, _Sink],
    tmp_path: Path,
) -> None:
    ada = seed(hubspot, zendesk)
    zendesk.fail(None, 503, times=None)  # every Zendesk route

    # invalid input is still refused at once, and nothing is kept
    bad = ask(
        gateway,
        'mutation { createTicket(input: {subject: " ", description: "x"}) { delivery } }',
        as_=ada.crm_id,
    )
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    started = time.monotonic()
    payload = create(gateway, ada, "Printer on fire", clientMutationId="m-1")
    took = time.monotonic() - started
    assert payload["delivery"] == "QUEUED"
    assert took < 1.0, took  # three quick attempts at Zendesk, then kept
    provisional = payload["ticket"]
    assert provisional["id"].startswith("pending-")
    assert provisional["status"] == "NEW"
    assert provisional["description"] == "About Printer on fire"
    assert provisional["delivery"]["state"] == "QUEUED"
    assert provisional["delivery"]["acceptedAt"] == payload["acceptedAt"]

    # listed as pending while Zendesk answers nothing at all
    [listed] = my_tickets(gateway, ada)
    assert (listed["id"], listed["subject"]) == (provisional["id"], "Printer on fire")
    assert listed["delivery"]["state"] == "QUEUED"
    # a client retry with the same clientMutationId answers the same provisional ticket
    again = create(gateway, ada, "Printer on fire", clientMutationId="m-1")
    assert again["ticket"]["id"] == provisional["id"]
    assert len(my_tickets(gateway, ada)) == 1

    async with GraphQLSocket.open(gateway.url, gateway.token(ada.crm_id)) as socket:
        await socket.subscribe("t", TICKET_UPDATED)
        with gateway_process(["worker"], environment(deployment), tmp_path) as worker:
            worker.wait_for_line("worker consuming")
            await asyncio.sleep(0.3)  # it tries, and Zendesk is still down
            assert zendesk.tickets_of(ada.zendesk_id) == []
            zendesk.clear_faults()
            event = (await socket.next_payload("t", within=15))["data"]["ticketUpdated"]
            [made] = zendesk.tickets_of(ada.zendesk_id)
            assert event == {"id": str(made["id"]), "status": "NEW", "subject": "Printer on fire"}
            smtp = sink[1]
            await wait_for_async(lambda: len(smtp.messages) == 1, within=10)
    [mail] = smtp.messages
    assert mail["To"] == ada.email
    assert mail["Subject"] == f"We received your request #{made['id']}"
    # every attempt carried the first attempt's key: Zendesk could have made it only once
    keys = {c.headers["idempotency-key"] for c in zendesk.calls_to("tickets_create")}
    assert len(keys) == 1

    # the real ticket now, saying it waited; the provisional id leads to it
    [real] = my_tickets(gateway, ada)
    assert real["id"] == str(made["id"])
    assert real["delivery"]["state"] == "DELIVERED"
    assert real["delivery"]["writeId"] == provisional["delivery"]["writeId"]
    mapped = ask(gateway, TICKET, {"id": provisional["id"]}, as_=ada.crm_id)["data"]["ticket"]
    assert mapped["id"] == str(made["id"])
    assert len(zendesk.tickets_of(ada.zendesk_id)) == 1


async def test_a_worker_killed_after_zendesk_answered_leaves_exactly_one_ticket(
    gateway: GatewayServer,
    hubspot: FakeHubSpot,
    zendesk: FakeZendesk,
    deployment: dict[str, Any],
    tmp_path: Path,
) -> None:
    ada = seed(hubspot, zendesk)
    zendesk.fail("tickets_create", 503, times=None)
    provisional = create(gateway, ada, "Kill me")["ticket"]
    write_id = provisional["delivery"]["writeId"]
    zendesk.clear_faults()

    pausing = environment(deployment, outbox_pause_after_send=60)
    with gateway_process(["worker"], pausing, tmp_path) as doomed:
        doomed.wait_for_line("outbox write sent; pausing", timeout=20)
        assert len(zendesk.tickets_of(ada.zendesk_id)) == 1  # Zendesk has it
        doomed.kill()  # SIGKILL: no record, no acknowledgement
    assert not delivered(gateway, ada.crm_id, write_id)
    assert my_tickets(gateway, ada)[0]["delivery"]["state"] == "QUEUED"

    with gateway_process(["worker"], environment(deployment), tmp_path):
        wait_for(lambda: delivered(gateway, ada.crm_id, write_id), timeout=20)
    assert len(zendesk.tickets_of(ada.zendesk_id)) == 1
    posts = zendesk.calls_to("tickets_create")
    assert posts[-1].response_headers["x-idempotency-lookup"] == "hit"
    [real] = my_tickets(gateway, ada)
    assert real["id"] == str(zendesk.tickets_of(ada.zendesk_id)[0]["id"])


async def test_the_same_message_delivered_twice_makes_one_ticket(
    gateway: GatewayServer,
    hubspot: FakeHubSpot,
    zendesk: FakeZendesk,
    make_settings: Callable[..., Settings],
    deployment: dict[str, Any],
) -> None:
    ada = seed(hubspot, zendesk)
    zendesk.fail("tickets_create", 503, times=None)
    write_id = create(gateway, ada, "Twice")["ticket"]["delivery"]["writeId"]
    zendesk.clear_faults()
    async with open_worker(make_settings(**deployment), consumer="only") as worker:
        [delivery] = await worker.bus.receive("only", 10, wait=2)
        assert await worker.handle(delivery) == "done"
        assert await worker.handle(delivery) == "done"  # the bus hands it out again
    assert len(zendesk.tickets_of(ada.zendesk_id)) == 1
    answered = [c for c in zendesk.calls_to("tickets_create") if not c.faulted]
    assert len(answered) == 1  # the second time, the record said: done already
    assert delivered(gateway, ada.crm_id, write_id)


async def test_two_workers_deliver_each_write_once_in_each_customers_order(
    gateway: GatewayServer,
    hubspot: FakeHubSpot,
    zendesk: FakeZendesk,
    make_settings: Callable[..., Settings],
    deployment: dict[str, Any],
) -> None:
    people = [seed(hubspot, zendesk, n) for n in range(2)]
    zendesk.fail("tickets_create", 503, times=None)
    for number in range(4):
        for person in people:
            assert create(gateway, person, f"{person.crm_id} #{number}")["delivery"] == "QUEUED"
    zendesk.clear_faults()
    zendesk.latency = 0.03  # deliveries overlap between the workers
    settings = make_settings(**deployment)
    stop = asyncio.Event()
    async with (
        open_worker(settings, consumer="one") as one,
        open_worker(settings, consumer="two") as two,
    ):
        running = [asyncio.create_task(w.run(stop)) for w in (one, two)]

        def all_made() -> bool:
            return all(len(zendesk.tickets_of(p.zendesk_id)) >= 4 for p in people)

        await wait_for_async(all_made, within=30)
        await asyncio.sleep(0.5)  # anything still in flight would show now
        stop.set()
        await asyncio.gather(*running)
    for person in people:
        made = zendesk.tickets_of(person.zendesk_id)
        subjects = [t["subject"] for t in sorted(made, key=lambda t: t["id"])]
        assert subjects == [f"{person.crm_id} #{n}" for n in range(4)]


async def test_a_ticket_kept_on_rabbitmq_is_delivered_once(
    hubspot: FakeHubSpot,
    zendesk: FakeZendesk,
    make_settings: Callable[..., Settings],
    deployment: dict[str, Any],
    rabbitmq_url: str,
) -> None:
    settings = make_settings(
        **deployment,
        events_backend="rabbitmq",
        rabbitmq_url=rabbitmq_url,
        rabbitmq_queue=f"pgtest-outbox-{uuid.uuid4().hex[:8]}",
    )
    ada = seed(hubspot, zendesk)
    zendesk.fail("tickets_create", 503, times=None)
    with running_gateway(settings) as gateway:
        provisional = create(gateway, ada, "Over AMQP")["ticket"]
        zendesk.clear_faults()
        stop = asyncio.Event()
        async with open_worker(settings, consumer="rabbit") as worker:
            assert worker.bus.name == "rabbitmq"
            task = asyncio.create_task(worker.run(stop))
            await wait_for_async(lambda: zendesk.tickets_of(ada.zendesk_id) != [], within=20)
            write_id = provisional["delivery"]["writeId"]
            await wait_for_async(lambda: delivered(gateway, ada.crm_id, write_id), within=10)
            stop.set()
            await task
        [real] = my_tickets(gateway, ada)
        assert real["delivery"]["state"] == "DELIVERED"
    assert len(zendesk.tickets_of(ada.zendesk_id)) == 1
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        channel = await connection.channel()
        for name in (settings.rabbitmq_queue, f"{settings.rabbitmq_queue}.dead"):
            await channel.queue_delete(name)
    finally:
        await connection.close()
