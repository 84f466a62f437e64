"""The ideal client of a cold staff page, straight on the benchmark's fakes.

`python -m bench.ideal [--latency 40] [--requests 20]` starts the fake providers (the same
process, data and latency as `make bench`) and times, per staff page of 50 customers, what
a client with no gateway, no cache and no limits would do: HubSpot's batch read of the 50,
then every billing and help-desk call at once, each answer parsed with orjson. Two ways:

- `lists`: a list per customer (50 Stripe invoice lists, 50 Zendesk requested-ticket lists)
- `search`: the fewest calls (Stripe's invoice search, 8 customers a query: 7 queries;
  one Zendesk search export)

Prints p50/p90 per way. It is the "ideal client at the same latency" that issue 27's p50
target compares the gateway's cold staff-50 row with (docs/design.md section 12).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.fakes_providers import FakeProviders
from gateway.sources.fanout import spread

__all__ = ["main"]


async def _page(
    session: aiohttp.ClientSession, env: dict[str, str], ids: list[str], way: str
) -> None:
    hubspot = {"Authorization": f"Bearer {env['HUBSPOT_ACCESS_TOKEN']}"}
    body = {
        "inputs": [{"id": id} for id in ids],
        "properties": ["firstname", "lastname", "email", "stripe_customer_id", "zendesk_user_id"],
    }
    url = env["HUBSPOT_API_BASE"] + "/crm/v3/objects/contacts/batch/read"
    async with session.post(url, json=body, headers=hubspot) as response:
        records = orjson.loads(await response.read())["results"]
    billing = [r["properties"]["stripe_customer_id"] for r in records]
    helpdesk = [r["properties"]["zendesk_user_id"] for r in records]
    stripe = {"Authorization": f"Bearer {env['STRIPE_API_KEY']}"}
    basic = f"{env['ZENDESK_EMAIL']}/token:{env['ZENDESK_API_TOKEN']}".encode()
    zendesk = {"Authorization": "Basic " + base64.b64encode(basic).decode()}

    async def get(url: str, params: dict[str, Any], headers: dict[str, str]) -> Any:
        async with session.get(url, params=params, headers=headers) as response:
            return orjson.loads(await response.read())

    calls = []
    if way == "lists":
        for customer in billing:
            params = {"customer": customer, "limit": "5"}
            calls.append(get(env["STRIPE_API_BASE"] + "/v1/invoices", params, stripe))
        for user in helpdesk:
            path = f"/api/v2/users/{user}/tickets/requested"
            params = {"page[size]": "5", "sort_by": "created_at", "sort_order": "desc"}
            calls.append(get(env["ZENDESK_BASE_URL"] + path, params, zendesk))
    else:
        for group in spread(billing, 8):
            query = " OR ".join(f"customer:'{c}'" for c in group)
            params = {"query": query, "limit": "100"}
            calls.append(get(env["STRIPE_API_BASE"] + "/v1/invoices/search", params, stripe))
        query = " ".join(f"requester:{u}" for u in helpdesk)
        params = {"query": query, "filter[type]": "ticket", "page[size]": "1000"}
        calls.append(get(env["ZENDESK_BASE_URL"] + "/api/v2/search/export", params, zendesk))
    await asyncio.gather(*calls)


async def _measure(env: dict[str, str], ids: list[str], requests: int) -> dict[str, list[float]]:
    connector = aiohttp.TCPConnector(limit=0)
    took: dict[str, list[float]] = {"lists": [], "search": []}
    async with aiohttp.ClientSession(connector=connector) as session:
        for way in took:
            await _page(session, env, ids, way)  # connections opened, unmeasured
        for _ in range(requests):
            for way, times in took.items():  # alternating, so drift hits both alike
                started = time.perf_counter()
                await _page(session, env, ids, way)
                times.append((time.perf_counter() - started) * 1000)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=40.0, help="ms per provider call")
    parser.add_argument("--requests", type=int, default=20, help="pages per way")
    options = parser.parse_args()
    fakes = FakeProviders(options.latency)
    with tempfile.TemporaryDirectory() as workdir:
        fakes.start(Path(workdir))
        try:
            env = fakes.gateway_env()
            ids = fakes.dataset.staff_customers
            took = asyncio.run(_measure(env, ids, options.requests))
        finally:
            fakes.stop()
    for way, times in took.items():
        ordered = sorted(times)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(
            f"ideal client, staff page of {len(ids)}, {way}: p50 {statistics.median(times):.1f} ms,"
            f" p90 {p90:.1f} ms ({len(times)} pages, providers at {options.latency:.0f} ms)"
        )


if __name__ == "__main__":
    main()
