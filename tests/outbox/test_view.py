"""What the customer sees of writes still waiting: a profile change kept while HubSpot
refuses writes shows at once (read-your-writes) and reconciles once delivered; a file whose
deletion waits is gone from their list."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from gateway.errors import IntegrationUnavailable
from gateway.events.worker import open_worker
from gateway.settings import Settings
from tests.conftest import GatewayServer
from tests.events.clients import wait_for_async
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.zendesk import FakeZendesk
from tests.outbox.helpers import ask, seed

UPDATE = """mutation($input: UpdateProfileInput!) {
  updateProfile(input: $input) { name phone company profileDelivery { state acceptedAt } }
}"""
ME = "{ me { name phone company profileDelivery { state reason } } }"


async def test_a_kept_profile_change_shows_at_once_and_reconciles_in_order(
    gateway: GatewayServer,
    hubspot: FakeHubSpot,
    zendesk: FakeZendesk,
    make_settings: Callable[..., Settings],
    deployment: dict[str, Any],
) -> None:
    ada = seed(hubspot, zendesk)
    hubspot.fail("update", 503, times=None)  # reads work, writes do not

    bad = ask(gateway, UPDATE, {"input": {"phone": "call me"}}, as_=ada.crm_id)
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"  # refused, not kept

    first = ask(gateway, UPDATE, {"input": {"name": "Ada King"}}, as_=ada.crm_id)
    changed = first["data"]["updateProfile"]
    assert (changed["name"], changed["phone"]) == ("Ada King", "+1 555 0100")
    assert changed["profileDelivery"]["state"] == "QUEUED"
    # a second change waits behind the first, even though it could be sent on its own
    second = ask(gateway, UPDATE, {"input": {"name": "Ada Lovelace"}}, as_=ada.crm_id)
    assert second["data"]["updateProfile"]["name"] == "Ada Lovelace"
    me = ask(gateway, ME, as_=ada.crm_id)["data"]["me"]
    assert me["name"] == "Ada Lovelace"
    assert me["profileDelivery"] == {"state": "QUEUED", "reason": None}
    assert hubspot.get(ada.crm_id)["lastname"] == "0"  # nothing written yet
    # staff see what HubSpot holds
    staff = gateway.query(
        "query($id: ID!) { customer(id: $id) { name profileDelivery { state } } }",
        {"id": ada.crm_id},
        token=gateway.token(None, ["staff"]),
    ).json()["data"]["customer"]
    assert staff == {"name": "Customer 0", "profileDelivery": None}

    hubspot.clear_faults()
    stop = asyncio.Event()
    async with open_worker(make_settings(**deployment), consumer="profile") as worker:
        task = asyncio.create_task(worker.run(stop))

        def written() -> bool:
            return len([c for c in hubspot.calls_to("update") if not c.faulted]) == 2

        await wait_for_async(written, within=20)
        await asyncio.sleep(0.2)  # the second one's record
        stop.set()
        await task
    updates = [c.json["properties"] for c in hubspot.calls_to("update") if not c.faulted]
    assert [u["lastname"] for u in updates] == ["King", "Lovelace"]  # in the order written
    assert hubspot.get(ada.crm_id)["lastname"] == "Lovelace"
    me = ask(gateway, ME, as_=ada.crm_id)["data"]["me"]
    assert (me["name"], me["profileDelivery"]) == ("Ada Lovelace", None)


async def test_a_file_whose_deletion_waits_is_hidden_from_its_owner(
    gateway_server: GatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = gateway_server  # sandbox files on the in-process outbox and worker
    token = gateway.token("1001")
    listing = "{ me { files(first: 20) { edges { node { id name } } } } }"

    def names() -> list[str]:
        body = gateway.query(listing, token=token).json()
        return [e["node"]["id"] for e in body["data"]["me"]["files"]["edges"]]

    files = names()
    assert files, "the sandbox customer has files"
    store = gateway.sources.files
    real_delete = store.delete
    calls: list[str] = []
    back = threading.Event()

    async def unavailable(file: Any) -> None:
        calls.append(file.id)
        if len(calls) == 1:  # the local folder cannot be taken down: the store says it is
            raise IntegrationUnavailable(store.name, f"{store.name} timed out")
        await asyncio.to_thread(back.wait, 10)  # the worker's attempt hangs until then
        await real_delete(file)

    monkeypatch.setattr(store, "delete", unavailable)
    deleted = gateway.query(
        "mutation($id: ID!) { deleteFile(id: $id) { deletedFileId delivery acceptedAt } }",
        {"id": files[0]},
        token=token,
    ).json()["data"]["deleteFile"]
    assert deleted["deletedFileId"] == files[0]
    assert deleted["delivery"] == "QUEUED"
    await wait_for_async(lambda: len(calls) == 2, within=10)  # the app's worker has it

    assert names() == files[1:]  # hidden while its deletion waits
    gone = gateway.query(
        "query($id: ID!) { file(id: $id) { id } }", {"id": files[0]}, token=token
    ).json()
    assert gone["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    back.set()
    outbox = gateway.gateway.services.outbox

    def settled() -> bool:
        [write] = gateway.server.call(outbox.store.writes("1001"))
        return bool(write.state.value == "DELIVERED")

    await wait_for_async(settled, within=10)
    assert names() == files[1:]
