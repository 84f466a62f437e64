"""The fake providers of tests/fakes in one process of their own, seeded for the benchmark.

`python -m bench.fakes_server --latency 40 --customers 200 --ready-file PATH` serves
HubSpot, Stripe and Zendesk (each a Starlette app under uvicorn, one event loop) and S3
(moto's server, in a child process of its own) on free ports, each answering after the set
latency, plus a control app whose `GET /calls` answers the calls each provider has received
so far, by operation. When everything listens it writes the ports, credentials and seeded
data to PATH as JSON.

S3 runs apart because moto renders its XML in Python: in this process its thread held the
GIL while the event loop was taking the gateway's Stripe and Zendesk calls, which made
those providers look ~1 ms slower per call than they are (their handlers started late; the
time they report starts with the handler). Real providers share no interpreter.

The fakes record every call in memory (with bodies); this process folds those records
into counters once a second so a long benchmark does not grow it without bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.gateway_process import stop_process
from bench.ports import free_port

# tests.fakes lives in the checkout, not in the package: run from its root (`python -m`)
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.stripe import FakeStripe
from tests.fakes.zendesk import FakeZendesk

__all__ = ["main", "seed"]

INVOICES_EACH = 12
TICKETS_EACH = 12
FILES_EACH = 10
FILE_CUSTOMERS = 50  # customers with files: portal-home and the warm webhook burst use them
S3_BUCKET = "portal-bench"
S3_PREFIX = "customers/"
STRIPE_KEY = "sk_test_bench_" + "0" * 24
AWS_KEY = ("bench-access-key", "bench-secret-key")
_INVOICE_CYCLE = ("paid", "open", "paid", "draft", "void", "uncollectible", "paid", "open")
_TICKET_CYCLE = ("open", "solved", "pending", "new", "closed", "hold")
_EPOCH = 1_767_603_600  # 2026-01-05 09:00 UTC


# -- S3: moto's server with latency and a call counter --------------------------------------


class _TimedWsgi:
    """Answers each request `latency` seconds after moto has done its work (werkzeug serves
    each in a thread).

    moto's work (routing, the listing, its XML: several ms of CPU a call) comes first and
    the latency after it. The other way round, a portal page's S3 listing, sent beside the
    CRM call, kept one of this machine's two cores busy at the moment the CRM answer came
    back, and the gateway's handling of it, with the Redis round trips it makes, ran ~2 ms
    slower on the critical path than with that core free (a real S3 burns no CPU of the
    gateway's machine). Its time still counts the work and the latency alike.
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.latency = 0.0
        self.calls: Counter[str] = Counter()
        self.took: list[float] = []  # seconds per call, latency included (moto's XML too)
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        if path == _LEDGER_PATH:
            return self._ledger(method, query, start_response)
        if "list-type=2" in query:
            operation = "list_objects_v2"
        elif method == "HEAD":
            operation = "head_object"
        elif path.count("/") <= 1:
            operation = f"{method.lower()}_bucket"
        else:
            operation = f"{method.lower()}_object"
        with self._lock:
            self.calls[operation] += 1
        started = time.monotonic()
        body = self.app(environ, start_response)  # moto answers a list: the work is done
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            self.took.append(time.monotonic() - started)
        return body

    def _ledger(self, method: str, query: str, start_response: Callable[..., Any]) -> Any:
        """GET: the calls and times since the last GET, cleared; POST ?latency=SECONDS."""
        with self._lock:
            if method == "POST":
                self.latency = float(query.partition("latency=")[2] or 0)
            body = json.dumps({"calls": dict(self.calls), "took": self.took}).encode()
            self.calls.clear()
            self.took = []
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]


_LEDGER_PATH = "/__bench__/ledger"


class S3Process:
    """moto's S3 in a child process (`python -m bench.fakes_server --s3-port PORT`)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.fakes_server", "--s3-port", str(port)],
            cwd=Path(__file__).resolve().parent.parent,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.ledger()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the fake S3 did not start") from None
                time.sleep(0.1)

    def ledger(self, latency: float | None = None) -> dict[str, Any]:
        """Its calls and times since the last look (cleared); sets the latency if given."""
        query = "" if latency is None else f"?latency={latency}"
        method = "GET" if latency is None else "POST"
        request = urllib.request.Request(self.url + _LEDGER_PATH + query, method=method)
        with urllib.request.urlopen(request, timeout=10) as answer:
            ledger: dict[str, Any] = json.loads(answer.read())
        return ledger

    def stop(self) -> None:
        stop_process(self.process, grace=10)


def _serve_s3(port: int) -> None:
    """The child: moto's server on `port` until its parent is gone."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class QuietHandler(MotoRequestHandler):  # type: ignore[misc]
        def log_request(self, *_args: Any) -> None:  # no access log line per call
            return None

    timed = _TimedWsgi(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, timed, True, request_handler=QuietHandler)
    parent = os.getppid()

    def orphaned() -> None:  # the parent killed without a word: do not outlive it
        while os.getppid() == parent:
            time.sleep(1)
        server.shutdown()

    threading.Thread(target=orphaned, daemon=True).start()
    server.serve_forever()


# -- HubSpot, Stripe, Zendesk: the time each request takes, as the fake's server sees it -----


class TimedAsgi:
    """A fake's app, timed from the ASGI call to its answer's last byte handed to uvicorn:
    routing, reading the body, the handler (latency included), rendering and sending. That
    is the provider's side of a round trip; the handlers' own `took` starts after the body
    is read and stops before the answer is sent, ~1 ms a call short of it on this machine
    (a raw-socket client measured 1.1 ms more than `took`)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.took: list[float] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()

        async def timed(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.took.append(time.monotonic() - started)

        await self.app(scope, receive, timed)


# -- seeding --------------------------------------------------------------------------------


def seed(
    customers: int,
    hubspot: FakeHubSpot,
    stripe: FakeStripe,
    zendesk: FakeZendesk,
    s3_url: str,
) -> dict[str, Any]:
    """The benchmark's customers in every provider, linked as the CRM links them."""
    crm_ids: list[str] = []
    invoices: list[tuple[str, str]] = []
    for n in range(customers):
        crm_id = str(1001 + n)
        name = f"Customer {n + 1}"
        email = f"customer{n + 1}@example.com"
        billing_id = stripe.add_customer(email=email, name=name, id=f"cus_bench{n + 1:04d}")
        helpdesk_id = zendesk.add_user(email, name)
        hubspot.add(
            id=crm_id,
            firstname="Customer",
            lastname=str(n + 1),
            email=email,
            company=f"Company {n + 1}",
            phone=f"+1 555 010 {n:04d}",
            stripe_customer_id=billing_id,
            zendesk_user_id=helpdesk_id,
        )
        for i in range(INVOICES_EACH):
            status = _INVOICE_CYCLE[(i + n) % len(_INVOICE_CYCLE)]
            invoice_id = stripe.add_invoice(
                billing_id,
                status=status,
                total=1_000 * (i + 1) + 99 * n,
                currency="eur" if n % 3 == 2 else "usd",
                created=_EPOCH + 30 * 86_400 * i + 3600 * n,
                id=f"in_bench{n + 1:04d}{i + 1:03d}",
            )
            if i < 10:
                invoices.append((billing_id, invoice_id))
        stripe.add_subscription(billing_id, id=f"sub_bench{n + 1:04d}")
        for i in range(TICKETS_EACH):
            zendesk.add_ticket(
                helpdesk_id,
                f"Question {i + 1} from {name}",
                status=_TICKET_CYCLE[(i + n) % len(_TICKET_CYCLE)],
                priority=("low", "normal", "high")[i % 3],
            )
        crm_ids.append(crm_id)
    _seed_s3(s3_url, crm_ids[:FILE_CUSTOMERS])
    first = crm_ids[: min(50, customers)]
    return {
        "portal_customer": crm_ids[0],
        "staff_customers": first,
        "mixed_pool": crm_ids,
        "invoices": [list(pair) for pair in invoices[: 10 * len(first)]],
        "webhook_customers": first,
    }


def _seed_s3(url: str, customer_ids: Iterable[str]) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=AWS_KEY[0],
        aws_secret_access_key=AWS_KEY[1],
    )
    client.create_bucket(Bucket=S3_BUCKET)

    def put(item: tuple[str, int]) -> None:
        customer_id, i = item
        name = f"contract-{i + 1:02d}.pdf" if i % 2 == 0 else f"report-{i + 1:02d}.txt"
        client.put_object(
            Bucket=S3_BUCKET,
            Key=f"{S3_PREFIX}{customer_id}/{name}",
            Body=f"Document {i + 1} of customer {customer_id}\n".encode(),
            ContentType="application/pdf" if name.endswith(".pdf") else "text/plain",
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, [(c, i) for c in customer_ids for i in range(FILES_EACH)]))


# -- call counting ----------------------------------------------------------------------------

_STRIPE_ID = re.compile(r"/(in|cus|sub|bps)_[A-Za-z0-9]+")


class CallLedger:
    """Every provider's calls so far, by operation; the fakes' own logs folded in and cleared."""

    def __init__(
        self,
        hubspot: FakeHubSpot,
        stripe: FakeStripe,
        zendesk: FakeZendesk,
        s3: S3Process,
        timed: dict[str, TimedAsgi],
    ) -> None:
        self.fakes = (hubspot, zendesk)
        self.stripe = stripe
        self.s3 = s3
        self.timed = timed  # by provider: HubSpot, Stripe, Zendesk
        self.totals: dict[str, Counter[str]] = {
            "hubspot": Counter(),
            "stripe": Counter(),
            "zendesk": Counter(),
            "s3": Counter(),
        }
        # how long each provider took to answer each call since the last reset_service():
        # its whole request as its server sees it, and (", handler") its handler alone
        self.service: dict[str, list[float]] = {provider: [] for provider in self.totals}
        for provider in timed:
            self.service[f"{provider}, handler"] = []

    async def fold(self) -> None:
        # S3's ledger first, from its process, in a thread: the loop keeps serving meanwhile
        s3 = await asyncio.to_thread(self.s3.ledger)
        self.totals["s3"].update(s3["calls"])
        self._took("s3", s3["took"])
        # the rest runs on the event loop that also runs the fakes' handlers: no interleaving
        for fake in self.fakes:
            with fake.lock:
                self.totals[fake.provider].update(fake.counts())
                self._took(f"{fake.provider}, handler", (c.took for c in fake.calls))
                fake.reset_calls()
        calls = list(self.stripe.calls)
        self.stripe.reset_calls()
        for call in calls:
            path = _STRIPE_ID.sub(lambda m: "/{" + m[1] + "}", call.path.rstrip("/"))
            self.totals["stripe"][f"{call.method} {path}"] += 1
        self._took("stripe, handler", (c.took for c in calls))
        for provider, app in self.timed.items():
            took, app.took = app.took, []
            self._took(provider, took)

    def _took(self, provider: str, seconds: Iterable[float | None]) -> None:
        kept = self.service[provider]
        kept.extend(s for s in seconds if s is not None)
        del kept[:-10_000]  # bounded: a long run keeps its latest calls

    async def reset_service(self) -> None:
        await self.fold()
        for kept in self.service.values():
            kept.clear()

    async def service_ms(self) -> dict[str, float | None]:
        """Each provider's median time to answer one call since the last reset, in ms."""
        await self.fold()
        return {
            provider: round(statistics.median(kept) * 1000, 2) if kept else None
            for provider, kept in self.service.items()
        }

    async def snapshot(self) -> dict[str, dict[str, int]]:
        await self.fold()
        return {provider: dict(counts) for provider, counts in self.totals.items()}


# -- the process ------------------------------------------------------------------------------


def _server(app: Any, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=60,
    )
    return uvicorn.Server(config)


async def serve(options: argparse.Namespace) -> None:
    latency = options.latency / 1000
    hubspot = FakeHubSpot()
    stripe = FakeStripe(api_key=STRIPE_KEY)
    zendesk = FakeZendesk()
    ports = {name: free_port() for name in ("hubspot", "stripe", "zendesk", "s3", "control")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    hubspot.url, stripe.url, zendesk.url = urls["hubspot"], urls["stripe"], urls["zendesk"]
    s3 = await asyncio.to_thread(S3Process, ports["s3"])
    try:
        await _serve(options, latency, hubspot, stripe, zendesk, s3, ports, urls)
    finally:
        s3.stop()


async def _serve(
    options: argparse.Namespace,
    latency: float,
    hubspot: FakeHubSpot,
    stripe: FakeStripe,
    zendesk: FakeZendesk,
    s3: S3Process,
    ports: dict[str, int],
    urls: dict[str, str],
) -> None:
    dataset = await asyncio.to_thread(seed, options.customers, hubspot, stripe, zendesk, urls["s3"])
    timed = {
        "hubspot": TimedAsgi(hubspot.app),
        "stripe": TimedAsgi(stripe.app),
        "zendesk": TimedAsgi(zendesk.app),
    }
    ledger = CallLedger(hubspot, stripe, zendesk, s3, timed)
    await ledger.fold()  # seeding S3 went through the server: not the gateway's calls
    ledger.totals["s3"].clear()
    hubspot.latency = stripe.latency = zendesk.latency = latency
    await asyncio.to_thread(s3.ledger, latency)

    async def calls(_request: Request) -> JSONResponse:
        return JSONResponse(await ledger.snapshot())

    async def service(request: Request) -> JSONResponse:
        if request.method == "POST":
            await ledger.reset_service()
        return JSONResponse(await ledger.service_ms())

    control = Starlette(
        routes=[Route("/calls", calls), Route("/service", service, methods=["GET", "POST"])]
    )
    servers = [
        _server(timed["hubspot"], ports["hubspot"]),
        _server(timed["stripe"], ports["stripe"]),
        _server(timed["zendesk"], ports["zendesk"]),
        _server(control, ports["control"]),
    ]
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    while not all(server.started for server in servers):
        if any(task.done() for task in tasks):
            await asyncio.gather(*tasks)  # raises what stopped a server
        await asyncio.sleep(0.02)
    ready = {
        "urls": urls,
        "credentials": {
            "hubspot_token": hubspot.token,
            "stripe_key": STRIPE_KEY,
            "zendesk_email": zendesk.email,
            "zendesk_token": zendesk.token,
            "aws_key": AWS_KEY[0],
            "aws_secret": AWS_KEY[1],
            "s3_bucket": S3_BUCKET,
            "s3_prefix": S3_PREFIX,
        },
        "dataset": dataset,
    }
    await asyncio.to_thread(Path(options.ready_file).write_text, json.dumps(ready))
    while not any(task.done() for task in tasks):
        await asyncio.sleep(1)
        await ledger.fold()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fakes_server")
    parser.add_argument("--latency", type=float, default=40.0, help="ms per call")
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--ready-file")
    parser.add_argument("--s3-port", type=int, help="serve only S3, on this port (the child)")
    options = parser.parse_args(argv)
    if options.s3_port is not None:
        _serve_s3(options.s3_port)
        return 0
    if options.ready_file is None:
        parser.error("--ready-file is required")
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(options))
    else:
        uvloop.run(serve(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
