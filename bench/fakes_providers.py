"""The fake provider servers (tests/fakes) as the gateway's providers: HubSpot, Stripe,
Zendesk and S3 (moto), in a process of their own (bench/fakes_server.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.scenarios import Dataset

__all__ = ["FakeProviders", "available"]

ROOT = Path(__file__).resolve().parent.parent
_NEEDED = [
    "tests/fakes/hubspot.py",
    "tests/fakes/stripe.py",
    "tests/fakes/zendesk.py",
    "gateway/sources/hubspot.py",
    "gateway/sources/stripe.py",
    "gateway/sources/zendesk.py",
    "gateway/sources/s3.py",
]
CUSTOMERS = 200  # the mixed workload draws its staff pages from all of them


def available() -> bool:
    """Whether the fakes and the adapters they stand in for exist in this checkout."""
    if not all((ROOT / path).exists() for path in _NEEDED):
        return False
    try:
        import moto.server  # noqa: F401  (S3)
    except ImportError:
        return False
    return True


class FakeProviders:
    name = "fakes"
    providers = ("hubspot", "stripe", "zendesk", "s3")

    def __init__(self, latency_ms: float, customers: int = CUSTOMERS) -> None:
        self.latency_ms = latency_ms
        self.customers = customers
        self._process: subprocess.Popen[bytes] | None = None
        self._ready: dict[str, Any] = {}
        self.dataset = Dataset("", [], [], [], [])

    def start(self, workdir: Path, timeout: float = 120) -> None:
        ready_file = workdir / "fakes-ready.json"
        log_path = workdir / "fakes.log"
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.fakes_server",
                    "--latency",
                    str(self.latency_ms),
                    "--customers",
                    str(self.customers),
                    "--ready-file",
                    str(ready_file),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not ready_file.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the fake providers did not start:\n{tail}")
            time.sleep(0.1)
        self._ready = json.loads(ready_file.read_text())
        data = self._ready["dataset"]
        self.dataset = Dataset(
            portal_customer=data["portal_customer"],
            staff_customers=data["staff_customers"],
            mixed_pool=data["mixed_pool"],
            invoices=[(b, i) for b, i in data["invoices"]],
            webhook_customers=data["webhook_customers"],
        )

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def gateway_env(self) -> dict[str, str]:
        urls = self._ready["urls"]
        secrets = self._ready["credentials"]
        unlimited = "1000000/1s"  # the fakes enforce no rate limit; the limiter still runs
        return {
            "CRM_SOURCE": "hubspot",
            "HUBSPOT_API_BASE": urls["hubspot"],
            "HUBSPOT_ACCESS_TOKEN": secrets["hubspot_token"],
            "BILLING_SOURCE": "stripe",
            "STRIPE_API_BASE": urls["stripe"],
            "STRIPE_API_KEY": secrets["stripe_key"],
            "HELPDESK_SOURCE": "zendesk",
            "ZENDESK_BASE_URL": urls["zendesk"],
            "ZENDESK_EMAIL": secrets["zendesk_email"],
            "ZENDESK_API_TOKEN": secrets["zendesk_token"],
            "FILES_SOURCE": "s3",
            "S3_BUCKET": secrets["s3_bucket"],
            "S3_PREFIX": secrets["s3_prefix"],
            "S3_ENDPOINT_URL": urls["s3"],
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": secrets["aws_key"],
            "AWS_SECRET_ACCESS_KEY": secrets["aws_secret"],
            "RATE_LIMIT_HUBSPOT": unlimited,
            "RATE_LIMIT_STRIPE": unlimited,
            "RATE_LIMIT_ZENDESK": unlimited,
        }

    def gateway_command(self) -> list[str]:
        script = Path(sys.executable).with_name("portal-gateway")
        if script.exists():
            return [str(script), "serve"]
        return [sys.executable, "-m", "gateway.cli", "serve"]

    def calls(self, gateway_url: str) -> dict[str, dict[str, int]]:
        answer: dict[str, dict[str, int]] = httpx.get(
            self._ready["urls"]["control"] + "/calls", timeout=30
        ).json()
        return answer

    def service_ms(self, reset: bool = False) -> dict[str, float | None]:
        url = self._ready["urls"]["control"] + "/service"
        answer = httpx.post(url, timeout=30) if reset else httpx.get(url, timeout=30)
        measured: dict[str, float | None] = answer.json()
        return measured

    def expected_minimum(self, scenario: str) -> dict[str, int] | None:
        # HubSpot batch/read per 100 ids; S3 one listing per customer folder. A customer's
        # own page: Stripe and Zendesk one list each, and beside it one count each for
        # totalCount (10 of 12 shown: neither list page carries a total). A staff page of
        # 50 (12 invoices and 12 tickets each): Stripe's invoice search, 8 customers a query
        # so that one page of 100 holds each (10 clauses would need a second page in a
        # row), 7 queries; Zendesk one search export of up to 1,000 tickets (DESIGN 11)
        return {
            "portal-home": {"hubspot": 1, "stripe": 2, "zendesk": 2, "s3": 1},
            "staff-50": {"hubspot": 1, "stripe": 7, "zendesk": 1, "s3": 0},
        }.get(scenario)
