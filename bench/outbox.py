"""How long `createTicket` takes to answer with Zendesk up (DELIVERED) and down (QUEUED).

`python -m bench.outbox [--writes 20]` starts the fake HubSpot and Zendesk, a gateway on the
local Redis (REDIS_URL, default redis://127.0.0.1:6379/0; its keys under a prefix of its
own, deleted afterwards) with the default retry and breaker settings, and times writes
one after the other: Zendesk answering; Zendesk answering 503 with its breaker still
closed (each write's three attempts and their backoff come first); Zendesk answering 503
with the breaker open. Prints p50 and max per case (docs/design.md section 12).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from typing import Any

import redis

from gateway.settings import Settings
from tests.conftest import DATA_KEY, GatewayServer, running_gateway
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.zendesk import FakeZendesk
from tests.outbox.helpers import Person, create, seed
from tests.servers import free_port


def _timed(gateway: GatewayServer, people: list[Person], label: str) -> None:
    took: list[float] = []
    states: set[Any] = set()
    for person in people:
        started = time.monotonic()
        states.add(create(gateway, person, "Printer on fire")["delivery"])
        took.append(time.monotonic() - started)
    print(
        f"{label:<44} n={len(took):<3} {'/'.join(sorted(states)):<9} "
        f"p50 {statistics.median(took) * 1000:6.1f} ms   max {max(took) * 1000:6.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.outbox")
    parser.add_argument("--writes", type=int, default=20)
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"pgbench:outbox:{uuid.uuid4().hex[:8]}:"
    with FakeHubSpot().running() as hubspot, FakeZendesk().running() as zendesk:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            auth_dev_secret="bench-outbox-" + "x" * 24,
            port=free_port(),
            data_encryption_keys=DATA_KEY,
            crm_source="hubspot",
            hubspot_api_base=hubspot.url,
            hubspot_access_token=hubspot.token,
            helpdesk_source="zendesk",
            zendesk_base_url=zendesk.url,
            zendesk_email=zendesk.email,
            zendesk_api_token=zendesk.token,
            redis_url=url,
            cache_prefix=prefix,
        )
        try:
            with running_gateway(settings) as gateway:
                n = args.writes
                people = [seed(hubspot, zendesk, i) for i in range(2 * n + 2)]
                _timed(gateway, people[:n], "zendesk up")
                zendesk.fail(None, 503, times=None)
                # BREAKER_FAILURES (5) failed attempts open the breaker: two writes' worth
                _timed(gateway, people[n : n + 2], "zendesk 503, breaker closed")
                _timed(gateway, people[n + 2 :], "zendesk 503, breaker open")
        finally:
            client = redis.Redis.from_url(url)
            for key in client.scan_iter(match=prefix + "*"):
                client.delete(key)
            client.close()


if __name__ == "__main__":
    main()
