"""Several replicas on one Redis Cluster, as real processes: two `portal-gateway serve` and a
`portal-gateway worker` share the cache, the events, the live updates and the provider rate
limit; a master killed with SIGKILL fails over to its replica, the gateways keep answering
and no queued event is lost.

The cluster is this module's own (three masters, each with a replica; node timeout 1 s): the
failover test kills one of its masters.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.auth import mint_dev_token
from tests.cache.redis_process import RedisClusterProcesses, redis_cluster
from tests.conftest import DATA_KEY
from tests.events.clients import (
    INVOICE_UPDATED,
    GatewayProcess,
    GraphQLSocket,
    _Sink,
    gateway_process,
    smtp_sink,
    wait_for,
)
from tests.fakes.stripe import FakeStripe, running_fake_stripe
from tests.servers import free_port
from tests.webhooks import signing

PREFIX = "pgtest:replicas:"
STREAM = "{" + PREFIX + "events}"  # the events stream on a cluster (one hash tag)
SECRET = "test-dev-secret-" + "r" * 24
LIMIT = (2, 1.0)  # RATE_LIMIT_STRIPE of the deployment: calls per seconds
CUSTOMERS = 8  # sandbox CRM customers 1001.. with a Stripe customer cus_sbx0001.. each

INVOICES = "{ me { invoices(first: 5) { edges { node { id status } } } } }"


@dataclass
class Deployment:
    cluster: RedisClusterProcesses
    stripe: FakeStripe
    smtp: _Sink
    env: dict[str, str]
    a: str  # the two gateways' base URLs
    b: str
    worker: GatewayProcess
    workdir: Path


def _token(customer: str) -> str:
    return mint_dev_token(SECRET, customer)


def _query(url: str, customer: str, query: str = INVOICES) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/graphql",
        json={"query": query},
        headers={"Authorization": f"Bearer {_token(customer)}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _status(url: str, customer: str, invoice_id: str) -> str:
    body = _query(url, customer)
    assert "errors" not in body, body
    edges = body["data"]["me"]["invoices"]["edges"]
    [status] = [e["node"]["status"] for e in edges if e["node"]["id"] == invoice_id]
    return str(status)


def _paid(url: str, event_id: str, invoice: dict[str, Any]) -> httpx.Response:
    body = signing.stripe_event(event_id, "invoice.paid", invoice)
    return httpx.post(
        f"{url}/webhooks/stripe", content=body, headers=signing.stripe_headers(body), timeout=30
    )


def _serve(env: dict[str, str], workdir: Path, stack: contextlib.ExitStack) -> str:
    port = free_port()
    stack.enter_context(gateway_process(["serve", "--port", str(port)], env, workdir))
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=30)
    return url


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Fake Stripe (one open invoice per customer), two gateways and a worker, on a cluster."""
    workdir = tmp_path_factory.mktemp("replicas")
    with (
        redis_cluster() as cluster,
        running_fake_stripe() as stripe,
        smtp_sink() as (smtp_url, smtp),
        contextlib.ExitStack() as stack,
    ):
        for n in range(1, CUSTOMERS + 1):
            customer = stripe.add_customer(id=f"cus_sbx{n:04d}", email=f"c{n}@example.com")
            stripe.add_invoice(customer, id=f"in_rep{n:04d}", status="open", total=1200)
        env = {
            "REDIS_URL": cluster.url,
            "CACHE_PREFIX": PREFIX,
            "AUTH_DEV_SECRET": SECRET,
            "DATA_ENCRYPTION_KEYS": DATA_KEY,
            "SANDBOX_FILES_DIR": str(workdir / "files"),
            "BILLING_SOURCE": "stripe",
            "STRIPE_API_KEY": stripe.api_key,
            "STRIPE_API_BASE": stripe.url,
            "STRIPE_WEBHOOK_SECRET": signing.STRIPE_SECRET,
            "RATE_LIMIT_STRIPE": f"{LIMIT[0]}/{LIMIT[1]:g}s",
            "EVENTS_REDELIVERY_TIMEOUT": "2",
            "RETRY_BASE_DELAY": "0.05",
        }
        a = _serve(env, workdir, stack)
        b = _serve(env, workdir, stack)
        worker_env = {
            **env,
            "NOTIFY_BACKEND": "smtp",
            "SMTP_URL": smtp_url,
            "WORKER_METRICS_PORT": "0",
        }
        worker = stack.enter_context(gateway_process(["worker"], worker_env, workdir))
        worker.wait_for_line("worker consuming", timeout=30)
        yield Deployment(cluster, stripe, smtp, worker_env, a, b, worker, workdir)


async def test_a_webhook_to_one_replica_reaches_the_other_and_the_worker(
    deployment: Deployment,
) -> None:
    """B's answer is cached in the cluster and A serves it without asking Stripe; a webhook
    taken in by A drops it (B answers the new status) and reaches a subscription held on
    B; the worker on the cluster sends the customer's email once."""
    d = deployment
    assert _status(d.b, "1001", "in_rep0001") == "OPEN"
    store = redis.RedisCluster.from_url(d.cluster.url.replace("redis+cluster", "redis"))
    try:
        # the entity cache is filled just after the answer goes out
        wait_for(lambda: any(store.scan_iter(match=f"{PREFIX}billing*")), timeout=10)
    finally:
        store.close()
    asked = len(d.stripe.calls)
    assert _status(d.a, "1001", "in_rep0001") == "OPEN"
    assert len(d.stripe.calls) == asked  # A answered from what B cached

    async with GraphQLSocket.open(d.b, _token("1001")) as ada:
        await ada.subscribe("inv", INVOICE_UPDATED)
        d.stripe.set_invoice_status("in_rep0001", "paid")
        invoice = signing.stripe_invoice("in_rep0001", "cus_sbx0001", total=1200)
        assert _paid(d.a, "evt_rep_1", invoice).status_code == 200
        payload = await ada.next_payload("inv", within=10)
        update = payload["data"]["invoiceUpdated"]
        assert (update["id"], update["status"]) == ("in_rep0001", "PAID")

    assert _status(d.b, "1001", "in_rep0001") == "PAID"
    wait_for(lambda: len(d.smtp.messages) >= 1, timeout=15)
    assert [m["To"] for m in d.smtp.messages] == ["ada@example.com"]  # the CRM's address


def test_both_replicas_keep_the_provider_limit_together(deployment: Deployment) -> None:
    """Cold reads of six customers, three through each gateway at the same time: Stripe
    sees no more than the limit's calls in any window, as if one replica made them all."""
    d = deployment
    start = len(d.stripe.calls)
    errors: list[str] = []

    def read(url: str, customers: range) -> None:
        for n in customers:
            body = _query(url, str(1000 + n))
            if "errors" in body or not body["data"]["me"]["invoices"]["edges"]:
                errors.append(str(body))

    threads = [
        threading.Thread(target=read, args=(d.a, range(2, 5))),
        threading.Thread(target=read, args=(d.b, range(5, 8))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    arrivals = sorted(call.at for call in d.stripe.calls[start:])
    calls, per = LIMIT
    assert len(arrivals) >= 6  # one cold read of each customer's invoices at least
    busiest = max(sum(1 for t in arrivals if s <= t < s + per) for s in arrivals)
    assert busiest <= calls, arrivals


def _owner_port(cluster: RedisClusterProcesses, key: str) -> int:
    client = redis.RedisCluster.from_url(cluster.url.replace("redis+cluster", "redis"))
    try:
        return int(client.get_node_from_key(key).port)
    finally:
        client.close()


def _master_of(port: int) -> int | None:
    """The port of the master `port` replicates, None for a master."""
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        master = client.info("replication").get("master_port")
    finally:
        client.close()
    return None if master is None else int(master)


def _replicated(master: int, replica: int) -> bool:
    """Whether `replica` has received everything `master` wrote so far."""
    offsets = []
    for port in (master, replica):
        client = redis.Redis(port=port, socket_timeout=1)
        try:
            info = client.info("replication")
        finally:
            client.close()
        offsets.append(int(info["master_repl_offset"]))
    return offsets[0] == offsets[1]


async def test_a_master_killed_fails_over_and_no_queued_event_is_lost(
    deployment: Deployment,
) -> None:
    """The worker stops; twelve events are queued; the master of the stream's slot (and of
    the live-updates channel's) is killed (SIGKILL) and its replica promoted. Meanwhile
    both gateways answer every request and webhooks taken in during the failover are
    retried until accepted, as Stripe does; a subscription held on B through it all gets
    an event taken in by A after it; a new worker then sends every event's email: none
    lost."""
    d = deployment
    d.worker.stop()
    sent_before = len(d.smtp.messages)
    queued = [(f"evt_fo_{n}", f"in_fo{n:04d}", n % CUSTOMERS + 1) for n in range(12)]
    for event_id, invoice_id, n in queued:
        invoice = signing.stripe_invoice(invoice_id, f"cus_sbx{n:04d}")
        assert _paid(d.a, event_id, invoice).status_code == 200

    master = _owner_port(d.cluster, STREAM)
    assert _owner_port(d.cluster, f"{PREFIX}live") == master  # the channel's node dies too
    [replica] = [port for port in d.cluster.processes if _master_of(port) == master]
    wait_for(lambda: _replicated(master, replica), timeout=10)
    during = [(f"evt_fo_late_{n}", f"in_fol{n:04d}", n % CUSTOMERS + 1) for n in range(4)]

    def fail_over() -> tuple[float, int, int]:
        """Kills the master while both gateways are asked and webhooks arrive; answers the
        seconds to the promotion, the answers given meanwhile and the deliveries retried."""
        answers: list[int] = []
        failures: list[str] = []
        stop = threading.Event()

        def keep_asking() -> None:
            while not stop.is_set():
                for url in (d.a, d.b):
                    try:
                        body = _query(url, "1002", "{ me { id name } }")
                        answers.append(1)
                        if body.get("data", {}).get("me", {}).get("id") != "1002":
                            failures.append(str(body))
                    except (AssertionError, httpx.HTTPError) as error:
                        failures.append(repr(error))
                time.sleep(0.02)

        asking = threading.Thread(target=keep_asking)
        asking.start()
        killed_at = time.monotonic()
        retried = 0
        d.cluster.processes[master].kill()
        d.cluster.processes[master].wait(10)
        try:
            for event_id, invoice_id, n in during:
                invoice = signing.stripe_invoice(invoice_id, f"cus_sbx{n:04d}")
                # a provider retries a delivery that failed until it is accepted
                while (status := _paid(d.a, event_id, invoice).status_code) != 200:
                    assert status >= 500, status  # refused for now, never dropped as handled
                    retried += 1
                    assert time.monotonic() - killed_at < 30
                    time.sleep(0.2)
            wait_for(lambda: d.cluster.roles().get(replica) == "master", timeout=30)
            failover = time.monotonic() - killed_at
            time.sleep(1.0)  # the gateways keep answering after the promotion too
        finally:
            stop.set()
            asking.join(30)
        assert failures == []
        assert len(answers) > 20
        return failover, len(answers), retried

    async with GraphQLSocket.open(d.b, _token("1007")) as carol:
        await carol.subscribe("inv", INVOICE_UPDATED)
        failover, answered, retried = await asyncio.to_thread(fail_over)
        after = signing.stripe_invoice("in_foafter", "cus_sbx0007")  # none of `during`'s
        response = await asyncio.to_thread(_paid, d.a, "evt_fo_after", after)
        assert response.status_code == 200
        update = (await carol.next_payload("inv", within=15))["data"]["invoiceUpdated"]
        assert (update["id"], update["status"]) == ("in_foafter", "PAID")

    def drain() -> None:
        worker = GatewayProcess(["worker"], d.env, d.workdir)
        try:
            worker.wait_for_line("worker consuming", timeout=30)
            expected = sent_before + len(queued) + len(during) + 1
            wait_for(lambda: len(d.smtp.messages) >= expected, timeout=60)
        finally:
            worker.stop()

    await asyncio.to_thread(drain)
    sent = [(m["To"], m["Subject"]) for m in d.smtp.messages[sent_before:]]
    lost = len(queued) + len(during) + 1 - len(set(sent))
    assert len(sent) == len(set(sent))  # and none twice
    print(  # the closing note's figures: -s shows them
        f"\nfailover: replica promoted {failover:.1f}s after SIGKILL; "
        f"{answered} answers meanwhile, 0 failed; {retried} webhook deliveries "
        f"refused and retried; events lost: {lost}"
    )
    assert lost == 0
