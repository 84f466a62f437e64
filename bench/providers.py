"""The provider sets the gateway runs against: the sandbox, or the fake provider servers.

Each set says how to start the gateway against it, what data it holds (the Dataset the
scenarios draw from) and how many calls each provider has received so far.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Protocol

import httpx

from bench.scenarios import Dataset

__all__ = ["ProviderSet", "SandboxProviders", "parse_counter"]

_SAMPLE = re.compile(r"^bench_provider_calls_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse_counter(metrics: str) -> dict[str, dict[str, int]]:
    """`bench_provider_calls_total` samples as {provider: {operation: calls}}."""
    calls: dict[str, dict[str, int]] = {}
    for match in _SAMPLE.finditer(metrics):
        labels = dict(_LABEL.findall(match["labels"]))
        provider = calls.setdefault(labels["provider"], {})
        provider[labels["operation"]] = int(float(match["value"]))
    return calls


class ProviderSet(Protocol):
    name: str
    providers: tuple[str, ...]  # in table order
    dataset: Dataset

    def start(self, workdir: Path) -> None:
        """Start the providers; their logs go to `workdir`."""
        ...

    def stop(self) -> None: ...

    def gateway_env(self) -> dict[str, str]: ...

    def gateway_command(self) -> list[str]: ...

    def calls(self, gateway_url: str) -> dict[str, dict[str, int]]:
        """Calls received so far: {provider: {operation: count}}."""
        ...

    def expected_minimum(self, scenario: str) -> dict[str, int] | None:
        """Calls per cold query at the providers' batch minimum (DESIGN section 11)."""
        ...

    def service_ms(self, reset: bool = False) -> dict[str, float | None]:
        """Each provider's median time to answer a call (its latency plus its own work)
        since the last reset, in ms; empty where the providers cannot tell."""
        ...


class SandboxProviders:
    """The embedded sandbox providers with SANDBOX_LATENCY_MS: always available."""

    name = "sandbox"
    providers = ("crm", "billing", "helpdesk", "files")

    def __init__(self, latency_ms: float) -> None:
        from gateway.sources.sandbox import demo_data

        self.latency_ms = latency_ms
        data = demo_data()
        ids = sorted(data.customers, key=int)
        by_billing: dict[str, list[str]] = {}
        for invoice in sorted(data.invoices.values(), key=lambda i: i.id):
            by_billing.setdefault(invoice.billing_customer_id, []).append(invoice.id)
        webhook_customers = ids[:50]
        invoices = [
            (data.customers[c].billing_id or "", invoice_id)
            for c in webhook_customers
            for invoice_id in by_billing[data.customers[c].billing_id or ""][:10]
        ]
        self.dataset = Dataset(
            portal_customer=ids[0],
            staff_customers=ids[:50],
            mixed_pool=ids,
            invoices=invoices,
            webhook_customers=webhook_customers,
        )

    def start(self, workdir: Path) -> None:
        return None

    def stop(self) -> None:
        return None

    def gateway_env(self) -> dict[str, str]:
        return {"SANDBOX_LATENCY_MS": str(self.latency_ms)}

    def gateway_command(self) -> list[str]:
        return [sys.executable, "-m", "bench.sandbox_gateway"]

    def calls(self, gateway_url: str) -> dict[str, dict[str, int]]:
        return parse_counter(httpx.get(gateway_url + "/metrics", timeout=10).text)

    def service_ms(self, reset: bool = False) -> dict[str, float | None]:
        return {}  # in the gateway's own process: SANDBOX_LATENCY_MS is all there is

    def expected_minimum(self, scenario: str) -> dict[str, int] | None:
        # one batch call per provider operation the page needs
        return {
            "portal-home": {"crm": 1, "billing": 1, "helpdesk": 1, "files": 1},
            "staff-50": {"crm": 1, "billing": 1, "helpdesk": 1, "files": 0},
        }.get(scenario)
