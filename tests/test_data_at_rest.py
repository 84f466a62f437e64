"""Customer data at rest (issue 25), against a real Redis and a whole gateway: nothing
personal stored or sent through Redis in plaintext, and a deleted customer erased from
everything the gateway keeps."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
import redis
from prometheus_client import REGISTRY

from gateway.domain import Customer
from gateway.encryption import Undecryptable, generate_key
from gateway.events.codec import open_event
from gateway.events.notify import LogNotifier
from gateway.events.worker import Worker
from gateway.sources.sandbox import demo_data
from tests.conftest import DATA_CIPHER, GatewayServer
from tests.events.clients import INVOICE_UPDATED, GraphQLSocket
from tests.webhooks import signing
from tests.webhooks.conftest import webhooks_total

PORTAL_HOME = """query PortalHome { me {
  id name email company phone
  invoices(first: 10) { totalCount edges { node { id number status total } } }
  subscriptions { id status plan }
  tickets(first: 10) { totalCount edges { node { id subject status } } }
  files(first: 10) { totalCount edges { node { id name } } }
} }"""
STAFF_PAGE = """query($ids: [ID!]!) { customers(ids: $ids) {
  id name email phone company
  invoices(first: 5) { edges { node { id total status } } }
  tickets(first: 5) { edges { node { id subject } } }
} }"""
CREATE_TICKET = """mutation { createTicket(input: {subject: "Invoice copy for Ada Lovelace",
  description: "Please send it to ada@example.com", clientMutationId: "retry-safe-1"}) {
  ticket { id subject } } }"""

DATA = demo_data()
# What must never be readable in Redis: every name, email, phone and company of the data
# set, and the text of its tickets and files (they quote the names).
PERSONAL = sorted(
    {
        text
        for customer in DATA.customers.values()
        for text in (customer.name, customer.email, customer.phone, customer.company)
        if text
    }
)


def _undecryptable(kind: str) -> float:
    labels = {"kind": kind}
    return REGISTRY.get_sample_value("gateway_cache_undecryptable_total", labels) or 0.0


def _cache_misses(kind: str) -> float:
    labels = {"kind": kind, "result": "miss"}
    return REGISTRY.get_sample_value("gateway_cache_requests_total", labels) or 0.0


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_gateway(
    start: Callable[..., GatewayServer], redis_url: str, cache_prefix: str
) -> GatewayServer:
    """A sandbox gateway over Redis (cache, Redis Streams bus, live pub/sub), with every
    webhook secret set; customer 1002's CRM record has no billing or help-desk link, so
    the gateway finds (and caches) those by email."""
    gateway = start(redis_url=redis_url, cache_prefix=cache_prefix, **signing.WEBHOOK_SECRETS)
    unlink(gateway, "1002")
    return gateway


def unlink(gateway: GatewayServer, customer_id: str) -> None:
    """The CRM's record of the customer loses its links (billing and help desk keep theirs,
    found by email)."""
    crm = gateway.sources.crm
    crm.data = copy.copy(crm.data)
    crm.data.customers = dict(crm.data.customers)
    record: Customer = crm.data.customers[customer_id]
    crm.data.customers[customer_id] = msgspec.structs.replace(
        record, billing_id=None, helpdesk_id=None
    )


class Capture:
    """Every message published on the live channel while it runs (pub/sub keeps none)."""

    def __init__(self, redis_url: str, channel: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.messages: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if message is not None and message["type"] == "message":
                self.messages.append(message["data"])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()
        self.client.close()


def settled(store: redis.Redis, prefix: str) -> None:
    """Waits for the cache fills a request makes after answering: until the keys under
    `prefix` stay the same for a moment."""
    seen: set[bytes] = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = set(store.scan_iter(match=prefix + "*", count=1000))
        if now == seen:
            return
        seen = now
        time.sleep(0.2)
    raise AssertionError("the cache kept changing")


def everything_stored(store: redis.Redis, prefix: str) -> list[tuple[str, bytes]]:
    """(key, each value stored under it): strings, set members, stream entries' fields,
    once the writes in flight have landed."""
    settled(store, prefix)
    found: list[tuple[str, bytes]] = []
    for raw_key in store.scan_iter(match=prefix + "*", count=1000):
        key = raw_key.decode()
        kind = store.type(raw_key).decode()
        if kind == "string":
            value = store.get(raw_key)
            if value is not None:
                found.append((key, value))
        elif kind == "set":
            found.extend((key, member) for member in store.smembers(raw_key))
        elif kind == "stream":
            for _id, fields in store.xrange(raw_key):
                found.extend((key, v) for v in fields.values())
        elif kind == "hash":
            found.extend((key, v) for v in store.hgetall(raw_key).values())
        else:
            found.append((key, f"unexpected {kind}".encode()))
    return found


def post_hubspot(gateway: GatewayServer, *events: tuple[int, str, str]) -> None:
    body = signing.hubspot_events(*events)
    url = f"{gateway.url}/webhooks/hubspot"
    response = gateway.http.post(
        "/webhooks/hubspot", content=body, headers=signing.hubspot_headers("POST", url, body)
    )
    assert response.status_code == 200, response.text


def post_stripe_paid(gateway: GatewayServer, event_id: str, invoice_id: str) -> None:
    invoice = signing.stripe_invoice(invoice_id=invoice_id, customer="cus_sbx0001")
    body = signing.stripe_event(event_id, "invoice.paid", invoice)
    response = gateway.http.post(
        "/webhooks/stripe", content=body, headers=signing.stripe_headers(body)
    )
    assert response.status_code == 200, response.text


def ok(response: Any) -> dict[str, Any]:
    payload: dict[str, Any] = response.json()
    assert "errors" not in payload, payload
    return payload


def drain_queue(gateway: GatewayServer) -> list[str]:
    """What `portal-gateway worker` does, until the stream has nothing more to hand out;
    answers each delivery's outcome."""
    services = gateway.gateway.services

    async def drain() -> list[str]:
        bus = gateway.gateway.events.bus
        worker = Worker(
            bus,
            LogNotifier(),
            services.backend,
            services.sources.crm,
            prefix=gateway.settings.cache_prefix,
            consumer="t",
        )
        outcomes = []
        while deliveries := await bus.receive("t", 50, wait=0.2):
            outcomes += [await worker.handle(delivery) for delivery in deliveries]
        return outcomes

    outcomes: list[str] = gateway.server.call(drain(), timeout=30)
    return outcomes


async def test_nothing_personal_is_readable_in_redis_after_a_full_day(
    redis_gateway: GatewayServer, store: redis.Redis, cache_prefix: str, redis_url: str
) -> None:
    gateway = redis_gateway
    live = Capture(redis_url, f"{cache_prefix}live")
    try:
        async with GraphQLSocket.open(gateway.url, gateway.token("1001")) as ada:
            await ada.subscribe("inv", INVOICE_UPDATED)
            for customer in ("1001", "1002"):
                me = ok(gateway.query(PORTAL_HOME, token=gateway.token(customer)))["data"]["me"]
                assert me["email"]
                assert me["invoices"]["totalCount"] > 0
            staff = gateway.token(None, roles=["staff"])
            ids = [str(1001 + n) for n in range(20)]
            ok(gateway.query(STAFF_PAGE, {"ids": ids}, token=staff))
            ok(gateway.query(CREATE_TICKET, token=gateway.token("1001")))
            post_stripe_paid(gateway, "evt_rest_1", "in_sbx0001002")
            payload = await ada.next_payload("inv")
            assert payload["data"]["invoiceUpdated"]["id"] == "in_sbx0001002"
            post_hubspot(gateway, (501, "contact.propertyChange", "1003"))
            ok(gateway.query(PORTAL_HOME, token=gateway.token("1001")))  # cached again
    finally:
        live.close()

    stored = everything_stored(store, cache_prefix)
    kinds = {key[len(cache_prefix) :].split(":")[0] for key, _value in stored}
    # the day left every kind of entry behind
    assert {"crm", "billing", "helpdesk", "files", "resp", "idem", "tag", "events"} <= kinds
    assert any(":link:" in key for key, _value in stored)  # 1002's links, found by email
    for key, value in stored:
        for text in PERSONAL:
            assert text.encode() not in value, (key, text)
            assert text not in key, (key, text)
        assert b"Question 1 from" not in value  # ticket subjects quote the name
        assert b"Invoice copy for" not in value
    assert not any(b"@example.com" in value or "@example.com" in key for key, value in stored)

    # ... and what was stored is the data, sealed: it opens with the key, under its own key
    opened: list[bytes] = []
    for key, value in stored:
        if key.endswith((":events", ":events:dead")):
            opened.append(
                msgspec.json.encode(open_event(DATA_CIPHER, key, value))  # raises if not sealed
            )
        elif not key[len(cache_prefix) :].startswith(("tag:", "rl:")):
            opened.append(DATA_CIPHER.open(value, key.encode()))
    everything = b"\n".join(opened)
    assert b"Ada Lovelace" in everything
    assert b"grace@example.com" in everything
    assert b"Invoice copy for Ada Lovelace" in everything

    # live fan-out through Redis was sealed too, with the channel as associated data
    assert live.messages
    for message in live.messages:
        assert b"in_sbx0001002" not in message
        opened_message = DATA_CIPHER.open(message, f"{cache_prefix}live".encode())
        assert b"in_sbx0001002" in opened_message or b"hubspot:501" in opened_message


async def test_a_hubspot_deletion_erases_the_customer_everywhere(
    redis_gateway: GatewayServer, store: redis.Redis, cache_prefix: str
) -> None:
    gateway = redis_gateway
    staff = gateway.token(None, roles=["staff"])
    async with GraphQLSocket.open(gateway.url, gateway.token("1002")) as grace:
        await grace.subscribe("inv", INVOICE_UPDATED)
        for customer in ("1001", "1002"):
            ok(gateway.query(PORTAL_HOME, token=gateway.token(customer)))
        ok(gateway.query(STAFF_PAGE, {"ids": ["1001", "1002", "1003"]}, token=staff))
        ok(
            gateway.query(
                CREATE_TICKET.replace("retry-safe-1", "grace-1"), token=gateway.token("1002")
            )
        )
        before = everything_stored(store, cache_prefix)
        assert any(":link:" in key for key, _value in before)
        accepted = webhooks_total("hubspot", "accepted")

        post_hubspot(gateway, (601, "contact.deletion", "1002"))

        assert webhooks_total("hubspot", "accepted") == accepted + 1
        # the customer's live subscriptions end, on every replica (through Redis)
        assert await grace.receive() == {"type": "complete", "id": "inv"}
    # the worker erases the customer's queued events
    assert set(drain_queue(gateway)) == {"done"}

    mentions = ("1002", "cus_sbx0002", "900002", "grace@example.com", "Grace Hopper")
    after = everything_stored(store, cache_prefix)
    for key, value in after:
        assert not any(m in key for m in mentions), key
        if key.endswith(":events"):
            event = open_event(DATA_CIPHER, key, value)
            assert event.customer_id != "1002", event
        elif not key[len(cache_prefix) :].startswith(("tag:", "rl:")):
            plain = DATA_CIPHER.open(value, key.encode())
            assert not any(m.encode() in plain for m in mentions), key
        else:
            assert not any(m.encode() in value for m in mentions), key
    # only the customer went: Ada's page is still cached
    assert any(key.startswith(f"{cache_prefix}resp:customer:1001:") for key, _v in after)

    # the next read goes to the providers again
    crm_misses = _cache_misses("crm")
    me = ok(gateway.query(PORTAL_HOME, token=gateway.token("1002")))["data"]["me"]
    assert me["name"] == "Grace Hopper"  # the sandbox never deletes anyone
    assert _cache_misses("crm") > crm_misses


async def test_a_hubspot_merge_erases_the_record_merged_away(
    redis_gateway: GatewayServer, store: redis.Redis, cache_prefix: str
) -> None:
    gateway = redis_gateway
    for customer in ("1001", "1003"):
        ok(gateway.query(PORTAL_HOME, token=gateway.token(customer)))
    body = signing.hubspot_events((701, "contact.merge", "1001"))
    merged = body.replace(b'"objectId": 1001', b'"objectId": 1001, "mergedObjectIds": [1001, 1003]')
    url = f"{gateway.url}/webhooks/hubspot"
    response = gateway.http.post(
        "/webhooks/hubspot", content=merged, headers=signing.hubspot_headers("POST", url, merged)
    )
    assert response.status_code == 200, response.text
    keys = [key for key, _value in everything_stored(store, cache_prefix)]
    assert not any(key.endswith(":1003") or ":customer:1003:" in key for key in keys), keys
    assert not any(key.endswith("crm:customer:1001") for key in keys)  # updated: refetched


def test_a_value_that_does_not_decrypt_is_a_miss_never_an_error(
    redis_gateway: GatewayServer, store: redis.Redis, cache_prefix: str
) -> None:
    gateway = redis_gateway
    token = gateway.token("1001")
    ok(gateway.query(PORTAL_HOME, token=token))
    settled(store, cache_prefix)
    # every stored value tampered with: one flipped byte in each ciphertext
    tampered = 0
    for raw_key in store.scan_iter(match=f"{cache_prefix}*", count=1000):
        if store.type(raw_key) == b"string" and b":rl:" not in raw_key:
            value = bytearray(store.get(raw_key) or b"")
            value[-1] ^= 0x01
            store.set(raw_key, bytes(value), keepttl=True)
            tampered += 1
    assert tampered > 5
    crm_before, resp_before = _undecryptable("crm"), _undecryptable("resp")
    misses = _cache_misses("crm")
    me = ok(gateway.query(PORTAL_HOME, token=token))["data"]["me"]
    assert me["name"] == "Ada Lovelace"  # answered from the provider, not the cache
    assert _undecryptable("resp") == resp_before + 1
    assert _undecryptable("crm") == crm_before + 1
    assert _cache_misses("crm") == misses + 1
    # and what the gateway wrote back opens again
    settled(store, cache_prefix)
    key = f"{cache_prefix}crm:customer:1001"
    assert b"Ada Lovelace" in DATA_CIPHER.open(store.get(key) or b"", key.encode())


def test_a_value_copied_under_another_key_does_not_open(
    redis_gateway: GatewayServer, store: redis.Redis, cache_prefix: str
) -> None:
    gateway = redis_gateway
    ok(gateway.query(PORTAL_HOME, token=gateway.token("1001")))
    settled(store, cache_prefix)
    ada = store.get(f"{cache_prefix}crm:customer:1001")
    assert ada is not None
    # someone with write access to Redis tries to show Ada's record as Grace's
    store.set(f"{cache_prefix}crm:customer:1002", ada, ex=300)
    with pytest.raises(Undecryptable):
        DATA_CIPHER.open(ada, f"{cache_prefix}crm:customer:1002".encode())
    before = _undecryptable("crm")
    me = ok(gateway.query(PORTAL_HOME, token=gateway.token("1002")))["data"]["me"]
    assert me["name"] == "Grace Hopper"
    assert _undecryptable("crm") == before + 1


def test_a_gateway_with_another_key_reads_misses(
    start: Callable[..., GatewayServer],
    redis_gateway: GatewayServer,
    store: redis.Redis,
    redis_url: str,
    cache_prefix: str,
) -> None:
    """A replica configured with a different key (a mistake, or a retired key) answers
    from the providers, never fails and never serves what it cannot open."""
    ok(redis_gateway.query(PORTAL_HOME, token=redis_gateway.token("1001")))
    settled(store, cache_prefix)
    other = start(
        redis_url=redis_url, cache_prefix=cache_prefix, data_encryption_keys=generate_key()
    )
    before = _undecryptable("resp")
    response = other.query(PORTAL_HOME, token=other.token("1001"))
    assert ok(response)["data"]["me"]["name"] == "Ada Lovelace"
    assert _undecryptable("resp") == before + 1


def test_redis_keys_hold_pseudonyms_for_emails_and_client_addresses(
    start: Callable[..., GatewayServer],
    redis_url: str,
    cache_prefix: str,
    store: redis.Redis,
) -> None:
    gateway = start(redis_url=redis_url, cache_prefix=cache_prefix, rate_limit_ip="1000/1s")
    unlink(gateway, "1001")
    ok(gateway.query(PORTAL_HOME, token=gateway.token("1001")))
    settled(store, cache_prefix)
    keys = [k.decode() for k in store.scan_iter(match=f"{cache_prefix}*", count=1000)]
    link = (
        f"{cache_prefix}billing:link:{gateway.gateway.services.cache.pseudonym('ada@example.com')}"
    )
    assert link in keys
    assert any(k.startswith(f"{cache_prefix}rl:ip:") for k in keys)
    assert not any("127.0.0.1" in k or "@" in k for k in keys), keys


def test_undecryptable_events_are_dead_lettered_not_handled(
    redis_gateway: GatewayServer, store: redis.Redis, cache_prefix: str
) -> None:
    stream = f"{cache_prefix}events"
    gateway = redis_gateway
    post_hubspot(gateway, (801, "contact.propertyChange", "1001"))
    [(message_id, fields)] = store.xrange(stream)
    forged = bytearray(fields[b"e"])
    forged[-1] ^= 0x01
    store.xadd(stream, {"e": bytes(forged)})
    before = _undecryptable("events")
    assert drain_queue(gateway) == ["done"]  # the genuine one
    assert _undecryptable("events") == before + 1
    [(_id, dead)] = store.xrange(f"{stream}:dead")
    assert dead[b"reason"].startswith(b"undecodable: tampered")
    assert message_id != _id
