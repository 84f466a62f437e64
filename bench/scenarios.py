"""The scenarios of DESIGN section 9 and issue 11: their queries and what each row measures."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field

__all__ = [
    "MIXED_SUBSET",
    "MODES",
    "PORTAL_HOME",
    "SCENARIOS",
    "STAFF_PAGE",
    "Dataset",
    "Mode",
    "Row",
    "rows_for",
    "signed_stripe_events",
]

# me with 10 invoices, 10 tickets, 10 files: what a portal's home page asks for.
PORTAL_HOME = """query PortalHome {
  me {
    id name email company phone
    invoices(first: 10) {
      totalCount
      edges { cursor node {
        id number status currency total amountDue amountPaid createdAt dueDate paidAt
      } }
      pageInfo { hasNextPage endCursor }
    }
    tickets(first: 10) { totalCount edges { node { id subject status priority createdAt } } }
    files(first: 10) {
      totalCount edges { node { id name size contentType uploadedAt downloadUrl } }
    }
  }
}"""

# A staff view over many customers: 5 invoices and 5 tickets each.
STAFF_PAGE = """query StaffCustomers($ids: [ID!]!) {
  customers(ids: $ids) {
    id name email company
    invoices(first: 5) { totalCount edges { node { id number status total amountDue currency } } }
    tickets(first: 5) { totalCount edges { node { id subject status priority } } }
  }
}"""

# The mixed workload: staff pages over random subsets of this many customers, so nearly
# every page is a combination never asked before (the response cache misses) while every
# customer's entities are cached (the entity cache carries the load).
MIXED_SUBSET = 10


@dataclass(frozen=True, slots=True)
class Mode:
    """A gateway configuration compared in one run."""

    name: str
    env: dict[str, str]
    description: str


MODES = {
    "default": Mode("default", {}, "dataloaders + entity cache + response cache"),
    "rc-off": Mode("rc-off", {"RESPONSE_CACHE": "off"}, "dataloaders + entity cache"),
    "no-batching": Mode(
        "no-batching",
        {"GATEWAY_BATCHING": "false"},
        "GATEWAY_BATCHING=false: no dataloader batching, no entity or response cache",
    ),
}


@dataclass(frozen=True, slots=True)
class Dataset:
    """What the providers hold, as far as the scenarios need to know."""

    portal_customer: str  # the customer of portal-home
    staff_customers: list[str]  # the 50 of staff-50
    mixed_pool: list[str]  # customers the mixed workload draws subsets from
    # (billing customer id, invoice id) pairs the webhook burst pays
    invoices: list[tuple[str, str]]
    # customers whose pages the warm webhook burst caches first (those the events concern)
    webhook_customers: list[str]


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a scenario, in one mode, cold or warm, at one concurrency."""

    scenario: str
    mode: str
    state: str  # cold | warm
    concurrency: int
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.scenario} {self.state} [{self.mode}] c={self.concurrency}"


SCENARIOS = ("portal-home", "staff-50", "mixed", "webhook-burst")


def rows_for(scenario: str, mode: str) -> list[Row]:
    """The rows a scenario has in a mode. Cold latency is measured one request at a time."""
    if scenario in ("portal-home", "staff-50"):
        return [
            Row(scenario, mode, "cold", 1),
            Row(scenario, mode, "warm", 1),
            Row(scenario, mode, "warm", 16),
        ]
    if scenario == "mixed":
        return [Row(scenario, mode, "warm", 1), Row(scenario, mode, "warm", 16)]
    if scenario == "webhook-burst":
        return [Row(scenario, mode, "cold", 16), Row(scenario, mode, "warm", 16)]
    raise ValueError(f"unknown scenario {scenario!r}")


def signed_stripe_events(
    secret: str, invoices: list[tuple[str, str]], count: int, run_id: str
) -> list[tuple[bytes, str]]:
    """`count` distinct `invoice.paid` events (body, Stripe-Signature), signed now."""
    now = int(time.time())
    events: list[tuple[bytes, str]] = []
    for index in range(count):
        billing_id, invoice_id = invoices[index % len(invoices)]
        total = 1_000 + index
        body = json.dumps(
            {
                "id": f"evt_bench_{run_id}_{index:05d}",
                "object": "event",
                "type": "invoice.paid",
                "created": now,
                "data": {
                    "object": {
                        "id": invoice_id,
                        "object": "invoice",
                        "customer": billing_id,
                        "status": "paid",
                        "currency": "usd",
                        "total": total,
                        "amount_due": total,
                        "amount_paid": total,
                        "amount_remaining": 0,
                        "created": now - 86_400,
                        "status_transitions": {"paid_at": now},
                    }
                },
            },
            separators=(",", ":"),
        ).encode()
        signature = hmac.new(secret.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
        events.append((body, f"t={now},v1={signature}"))
    return events
