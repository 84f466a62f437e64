"""What @defer and soft deadlines give a page whose billing provider is slow (issue 28).

`python -m bench.incremental [--stripe-ms 1500] [--requests 20]` serves a gateway (sandbox
CRM, help desk and files; billing on the Stripe fake answering in --stripe-ms) and times a
portal page three ways, every request cold (GATEWAY_BATCHING=false: no entity or response
cache; one customer, so no batch is lost):

- `plain`: the page as one JSON answer (what every client got before)
- `defer`: the invoices in a `@defer` fragment, asked as Apollo Client asks
  (multipart/mixed;deferSpec=20220824): time to the first payload and to the last
- `soft`: the plain page with PROVIDER_SOFT_DEADLINES=billing=100, asked for parts

Prints p50/p90 in ms per way and part. A measurement, not a test: no assertion.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from gateway.app import create_app
from gateway.auth import mint_dev_token
from gateway.server import uvicorn_options
from gateway.settings import Settings
from tests.fakes.stripe import running_fake_stripe
from tests.multipart import post_for_parts
from tests.servers import free_port, serve

PAGE = """query Page { me { id name
  tickets(first: 10) { edges { node { id subject status } } }
  files(first: 10) { edges { node { id name } } }
  %s
} }"""
INVOICES = "invoices(first: 10) { edges { node { id total status } } }"
SECRET = "bench-incremental-" + "x" * 24
API_KEY = "sk_test_bench_incremental"


def _ms(values: list[float]) -> str:
    values = sorted(v * 1000 for v in values)
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    return f"p50 {statistics.median(values):7.1f}  p90 {p90:7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stripe-ms", type=float, default=1500)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with running_fake_stripe(API_KEY, latency=args.stripe_ms / 1000) as stripe:
        customer = stripe.add_customer(email="ada@example.com", name="Ada Lovelace")
        for total in range(1000, 13000, 1000):
            stripe.add_invoice(customer, status="open", total=total)
        rows: list[tuple[str, str]] = []
        for way, soft in (("plain/defer", ""), ("soft", "billing=100")):
            with tempfile.TemporaryDirectory() as files:
                settings = Settings(  # type: ignore[call-arg]
                    _env_file=None,
                    port=free_port(),
                    auth_dev_secret=SECRET,
                    sandbox_files_dir=Path(files),
                    billing_source="stripe",
                    stripe_api_key=API_KEY,
                    stripe_api_base=stripe.url,
                    provider_soft_deadlines=soft,
                    gateway_batching=False,
                )
                app = create_app(settings)
                with serve(app, **uvicorn_options(settings)) as server:
                    gateway = app.state.gateway
                    crm = gateway.services.sources.crm.data
                    crm.customers["1001"] = _linked(crm.customers["1001"], customer)
                    token = mint_dev_token(SECRET, "1001", None)
                    with httpx.Client(base_url=server.url, timeout=30) as http:
                        if way == "soft":
                            first, last = _parts(http, PAGE % INVOICES, token, args)
                            rows += [("soft: first payload", first), ("soft: last", last)]
                            continue
                        rows.append(("plain: whole page", _plain(http, token, args)))
                        query = PAGE % f'... @defer(label: "billing") {{ {INVOICES} }}'
                        first, last = _parts(http, query, token, args)
                        rows += [("defer: first payload", first), ("defer: last", last)]
    print(f"Stripe at {args.stripe_ms:.0f} ms, {args.requests} cold requests each (ms)")
    for name, figures in rows:
        print(f"  {name:<22} {figures}")


def _linked(record: Any, billing_id: str) -> Any:
    return msgspec.structs.replace(record, billing_id=billing_id)


def _plain(http: httpx.Client, token: str, args: argparse.Namespace) -> str:
    times = []
    for _ in range(args.requests):
        started = time.monotonic()
        response = http.post(
            "/graphql",
            json={"query": PAGE % INVOICES},
            headers={"Authorization": f"Bearer {token}"},
        )
        response.raise_for_status()
        times.append(time.monotonic() - started)
    return _ms(times)


def _parts(http: httpx.Client, query: str, token: str, args: argparse.Namespace) -> tuple[str, str]:
    firsts, lasts = [], []
    for _ in range(args.requests):
        _response, parts = post_for_parts(http, query, token)
        assert len(parts) == 2, parts
        firsts.append(parts[0].at)
        lasts.append(parts[-1].at)
    return _ms(firsts), _ms(lasts)


if __name__ == "__main__":
    main()
