"""Signed deliveries whose values cannot become a domain event (issue 20, item 9): every
provider answers 400, counted `bad_request`, never a 500 (which asks the provider to retry
what fails the same way each time), and logs no error; the same event, well formed, is
then handled as if the refused delivery had never come."""

from __future__ import annotations

import copy
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.settings import Settings
from tests.conftest import GatewayServer, running_gateway
from tests.servers import free_port
from tests.webhooks import signing
from tests.webhooks.conftest import webhooks_total


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()  # the field is left out

Path = tuple[str | int, ...]

# shape: (provider, a well-formed delivery of it carrying event number n)
WELL_FORMED: dict[str, tuple[str, Callable[[int], bytes]]] = {
    "stripe": ("stripe", lambda n: signing.stripe_event(f"evt_unreadable_{n}")),
    "hubspot": ("hubspot", lambda n: signing.hubspot_events((n, "contact.propertyChange", "1001"))),
    "zendesk": (
        "zendesk",
        lambda n: signing.zendesk_event(f"01HZ-{n}", "zen:event-type:ticket.status_changed"),
    ),
    "xero": ("xero", lambda n: signing.xero_events(f"in-unreadable-{n}")),
    "quickbooks": ("quickbooks", lambda n: signing.quickbooks_events(f"in-unreadable-{n}")),
    "quickbooks-cloud": (
        "quickbooks",
        lambda n: signing.quickbooks_cloud_events(f"in-unreadable-{n}"),
    ),
}
_numbers = itertools.count(1)

STRIPE_INVOICE: Path = ("data", "object")
QUICKBOOKS_ENTITY: Path = ("eventNotifications", 0, "dataChangeEvent", "entities", 0)

# unix seconds (Stripe) and milliseconds (HubSpot): out of range, non-integral, mistyped
EPOCH_SECONDS = [
    1e20,
    -1e18,
    1e300,
    10**19,  # an integer, year ~3e11
    2**63,
    253_402_300_800,  # 10000-01-01
    -1,  # before 1970
    1_764_300_000.5,
    "1764300000",
    "2026-01-05T09:00:00Z",
    True,
    {"seconds": 1_764_300_000},
    [1_764_300_000],
]
EPOCH_MILLIS = [
    1e17,
    1e300,
    -1e18,
    10**19,
    253_402_300_800_000,
    1_764_300_000_000.5,
    "1764300000000",
    True,
    {},
]
# ISO 8601 strings (Zendesk, Xero, QuickBooks)
ISO_TIMES = [
    "99999-01-01T00:00:00Z",
    "2024-13-45",
    "2024-02-30T00:00:00Z",
    "1e300",
    "yesterday",
    "",
    "9999-12-31T23:59:59-05:00",  # past 9999 once in UTC
    "0001-01-01T00:00:00+05:00",  # before year 1 once in UTC
    "2024-01-01T00:00:00+25:00",
    1e300,
    1_764_300_000,
    {"date": "2026-01-05"},
    ["2026-01-05T09:00:00Z"],
]
# required: a missing or null time is no time either
REQUIRED = [None, MISSING]


def cases(shape: str, path: Path, values: list[Any]) -> list[Any]:
    return [
        pytest.param(shape, path, value, id=f"{shape}-{'.'.join(map(str, path))}={value!r:.40}")
        for value in values
    ]


HOSTILE = [
    # the four deliveries of the issue, as found
    *cases("stripe", ("created",), [1e20, -1e18]),
    *cases("stripe", (*STRIPE_INVOICE, "status_transitions", "paid_at"), [1e300]),
    *cases("hubspot", (0, "occurredAt"), [1e17]),
    # every time each provider sends
    *cases("stripe", ("created",), EPOCH_SECONDS[2:] + REQUIRED),
    *cases("stripe", (*STRIPE_INVOICE, "created"), EPOCH_SECONDS + REQUIRED),
    *cases("stripe", (*STRIPE_INVOICE, "due_date"), EPOCH_SECONDS),
    *cases("stripe", (*STRIPE_INVOICE, "status_transitions", "paid_at"), EPOCH_SECONDS[3:]),
    *cases("hubspot", (0, "occurredAt"), EPOCH_MILLIS[1:] + REQUIRED),
    *cases("zendesk", ("time",), ISO_TIMES + REQUIRED),
    *cases("zendesk", ("detail", "created_at"), ISO_TIMES + REQUIRED),
    *cases("zendesk", ("detail", "updated_at"), ISO_TIMES),
    *cases("xero", ("events", 0, "eventDateUtc"), ISO_TIMES + REQUIRED),
    *cases("quickbooks", (*QUICKBOOKS_ENTITY, "lastUpdated"), ISO_TIMES + REQUIRED),
    *cases("quickbooks-cloud", (0, "time"), ISO_TIMES + REQUIRED),
    # amounts: integers of minor units, no bigger than 64 bits
    *cases("stripe", (*STRIPE_INVOICE, "total"), [1e300, 2**63, 2000.5, "2000", None]),
    *cases("stripe", (*STRIPE_INVOICE, "amount_remaining"), [-1e18, 2**64 - 1, "0"]),
    *cases("stripe", (*STRIPE_INVOICE, "amount_paid"), [1e20, [2000]]),
    # ids, strings and nested garbage
    *cases("stripe", ("id",), [1e300, {}, None]),
    *cases("stripe", (*STRIPE_INVOICE, "customer"), [{"id": {"$oid": "1"}}, 42.0]),
    *cases("stripe", (*STRIPE_INVOICE, "currency"), [840, {"code": "usd"}]),
    *cases("stripe", (*STRIPE_INVOICE, "hosted_invoice_url"), [5, ["https://x"]]),
    *cases("stripe", (*STRIPE_INVOICE, "status_transitions"), ["paid", [1]]),
    *cases("stripe", STRIPE_INVOICE, ["in_sbx0001002", [], MISSING]),
    *cases("hubspot", (0, "objectId"), [1.5, {}, None]),
    *cases("hubspot", (0, "eventId"), [[], MISSING]),
    *cases("hubspot", (0,), ["contact.propertyChange"]),
    *cases("zendesk", ("detail", "id"), [1e300, {}]),
    *cases("zendesk", ("detail", "requester_id"), [[], MISSING]),
    *cases("zendesk", ("detail", "status"), [5, {"name": "OPEN"}]),
    *cases("zendesk", ("detail", "subject"), [{"text": "Question"}, 7]),
    *cases("zendesk", ("detail",), ["ticket", MISSING]),
    *cases("xero", ("events", 0, "resourceId"), [1e300, {}, MISSING]),
    *cases("xero", ("events", 0, "tenantId"), [{"id": "c2cc9b6e"}, 1.5]),
    *cases("xero", ("events", 0), ["INVOICE"]),
    *cases("xero", ("events",), [{"0": {}}]),
    *cases("quickbooks", (*QUICKBOOKS_ENTITY, "id"), [1.5, {}]),
    *cases("quickbooks", ("eventNotifications", 0, "realmId"), [["1185883450"]]),
    *cases("quickbooks", ("eventNotifications", 0, "dataChangeEvent"), ["Invoice"]),
    *cases("quickbooks-cloud", (0, "intuitentityid"), [1e300, MISSING]),
]


def spoiled(payload: Any, path: Path, value: Any) -> Any:
    """A copy of `payload` with the value at `path` replaced by `value` (or removed)."""
    payload = copy.deepcopy(payload)
    *parents, last = path
    target = payload
    for key in parents:
        target = target[key]
    if value is MISSING:
        del target[last]
    else:
        target[last] = value
    return payload


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """One embedded gateway for the module's couple of hundred cases (one each would make
    it the slowest module here); the cases tell their events apart by number."""
    values: dict[str, Any] = {
        **signing.WEBHOOK_SECRETS,
        "auth_dev_secret": "test-dev-secret-" + "x" * 24,
        "sandbox_files_dir": tmp_path_factory.mktemp("files"),
        "port": free_port(),
    }
    settings = Settings(_env_file=None, **values)
    with running_gateway(settings) as running:
        yield running


def deliver(gateway: GatewayServer, provider: str, payload: Any) -> httpx.Response:
    body = json.dumps(payload).encode()
    path = f"/webhooks/{provider}"
    headers = signing.signed_headers(provider, body, gateway.url + path)
    return gateway.http.post(path, content=body, headers=headers)


@pytest.mark.parametrize(("shape", "path", "value"), HOSTILE)
def test_a_signed_delivery_that_is_no_event_is_a_bad_request(
    gateway: GatewayServer, caplog: pytest.LogCaptureFixture, shape: str, path: Path, value: Any
) -> None:
    provider, make = WELL_FORMED[shape]
    well_formed = json.loads(make(next(_numbers)))
    before = {o: webhooks_total(provider, o) for o in ("bad_request", "error", "accepted")}
    with caplog.at_level(logging.INFO):
        refused = deliver(gateway, provider, spoiled(well_formed, path, value))
    # an exception left unhandled answers 500; one handled is logged as an error here
    assert refused.status_code == 400, refused.text
    assert webhooks_total(provider, "bad_request") == before["bad_request"] + 1
    assert webhooks_total(provider, "error") == before["error"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert [r.getMessage() for r in errors] == []
    # nothing of it was remembered: the same event, well formed, is handled (not a duplicate)
    accepted = deliver(gateway, provider, well_formed)
    assert accepted.status_code == 200, accepted.text
    assert webhooks_total(provider, "accepted") == before["accepted"] + 1
