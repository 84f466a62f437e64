"""Every /api endpoint against the sandbox and against the HubSpot, Stripe and Zendesk fakes
(tests/rest/conftest.py): the answers are what /graphql says of the same data, another
customer's data is a 404 that says nothing, and problems carry GraphQL's codes."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.rest.conftest import World

PROBLEM = "application/problem+json"


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "urn:portal-gateway:problem:" + code.lower().replace("_", "-")
    assert body["title"]
    assert body["detail"]
    return body


def next_link(response: httpx.Response) -> str | None:
    found = re.fullmatch(r'<([^>]+)>; rel="next"', response.headers.get("link", ""))
    return found.group(1) if found else None


def test_me_is_the_signed_in_customer_with_its_subscriptions(world: World) -> None:
    response = world.http.get("/api/me", headers=world.own.auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    me = response.json()
    assert me["id"] == world.own.id
    assert set(me) == {"id", "name", "email", "company", "phone", "subscriptions"}
    assert me["subscriptions"]
    assert all(s["status"] for s in me["subscriptions"])
    assert "_missing" not in me


def test_a_customer_by_id_for_itself_and_for_staff(world: World) -> None:
    mine = world.http.get(f"/api/customers/{world.own.id}", headers=world.own.auth)
    assert mine.status_code == 200
    assert mine.json() == world.http.get("/api/me", headers=world.own.auth).json()
    theirs = world.http.get(f"/api/customers/{world.other.id}", headers=world.staff())
    assert theirs.status_code == 200
    assert theirs.json()["id"] == world.other.id


def test_invoice_pages_follow_the_link_header_to_every_invoice(world: World) -> None:
    seen: list[str] = []
    url: str | None = f"/api/customers/{world.own.id}/invoices?first=2"
    pages = 0
    while url is not None:
        response = world.http.get(url, headers=world.own.auth)
        assert response.status_code == 200
        page = response.json()
        # every page says the total, Stripe's too (its search count, issue 27), as /graphql
        assert page["totalCount"] == len(world.own.invoices)
        assert len(page["items"]) <= 2
        seen += [invoice["id"] for invoice in page["items"]]
        url = next_link(response)
        assert page["pageInfo"]["hasNextPage"] is (url is not None)
        if url is not None:
            assert parse_qs(urlsplit(url).query)["first"] == ["2"]
        pages += 1
    assert seen == world.own.invoices  # every invoice once, in /graphql's order
    assert pages == (len(seen) + 1) // 2


def test_invoices_filtered_by_status(world: World) -> None:
    url = f"/api/customers/{world.own.id}/invoices?status=PAID&first=100"
    items = world.http.get(url, headers=world.own.auth).json()["items"]
    assert items
    assert all(invoice["status"] == "PAID" for invoice in items)
    assert {i["id"] for i in items} < set(world.own.invoices)


def test_tickets_of_a_customer_and_by_status(world: World) -> None:
    url = f"/api/customers/{world.own.id}/tickets?first=100"
    page = world.http.get(url, headers=world.own.auth).json()
    assert [t["id"] for t in page["items"]] == world.own.tickets
    status = world.own.ticket_statuses[0]
    filtered = world.http.get(f"{url}&status={status}", headers=world.own.auth).json()
    assert filtered["items"]
    assert all(t["status"] == status for t in filtered["items"])


def test_documents_come_with_working_download_links(world: World) -> None:
    url = f"/api/customers/{world.own.id}/documents?first=100"
    page = world.http.get(url, headers=world.own.auth).json()
    assert [d["id"] for d in page["items"]] == world.own.documents
    first = page["items"][0]
    download = httpx.get(first["downloadUrl"])
    assert download.status_code == 200
    assert len(download.content) == first["size"]


def test_an_invoice_and_a_ticket_by_id(world: World) -> None:
    invoice_id = world.own.invoices[0]
    invoice = world.http.get(f"/api/invoices/{invoice_id}", headers=world.own.auth)
    assert invoice.status_code == 200
    assert invoice.json()["id"] == invoice_id
    assert isinstance(invoice.json()["total"], int)
    ticket_id = world.own.tickets[0]
    ticket = world.http.get(f"/api/tickets/{ticket_id}", headers=world.own.auth)
    assert ticket.status_code == 200
    assert ticket.json()["id"] == ticket_id
    assert ticket.json()["subject"]


def test_another_customers_data_is_404_and_says_nothing(world: World) -> None:
    other = world.other
    unknown = world.http.get("/api/invoices/in_does_not_exist", headers=world.own.auth)
    nothing = problem(unknown, 404, "NOT_FOUND")
    paths = [
        f"/api/customers/{other.id}",
        f"/api/customers/{other.id}/invoices",
        f"/api/customers/{other.id}/tickets",
        f"/api/customers/{other.id}/documents",
        f"/api/invoices/{other.invoices[0]}",
        f"/api/tickets/{other.tickets[0]}",
    ]
    for path in paths:
        response = world.http.get(path, headers=world.own.auth)
        body = problem(response, 404, "NOT_FOUND")
        assert body == nothing, path  # the same answer an unknown id gets: never say which
        assert other.id not in response.text or other.id in path
    # and no write reaches the other customer
    put = world.http.put(
        f"/api/customers/{other.id}", json={"name": "Mallory"}, headers=world.own.auth
    )
    assert problem(put, 404, "NOT_FOUND") == nothing
    delete = world.http.delete(f"/api/documents/{other.documents[0]}", headers=world.own.auth)
    assert problem(delete, 404, "NOT_FOUND") == nothing
    theirs = world.http.get(f"/api/customers/{other.id}", headers=other.auth).json()
    assert theirs["name"] != "Mallory"
    still = world.http.get(f"/api/customers/{other.id}/documents?first=100", headers=other.auth)
    assert [d["id"] for d in still.json()["items"]] == other.documents


def test_create_ticket_once_per_idempotency_key(world: World) -> None:
    headers = {**world.own.auth, "Idempotency-Key": "retry-me-1"}
    body = {"subject": "Printer on fire", "description": "It is, really.", "priority": "high"}
    first = world.http.post("/api/tickets", json=body, headers=headers)
    assert first.status_code == 201, first.text
    ticket = first.json()
    assert ticket["subject"] == "Printer on fire"
    assert ticket["priority"] == "high"
    assert first.headers["location"] == f"/api/tickets/{ticket['id']}"
    again = world.http.post("/api/tickets", json=body, headers=headers)
    assert again.status_code == 201
    assert again.json()["id"] == ticket["id"]
    assert world.holdings(world.own.id).tickets.count(ticket["id"]) == 1
    assert len(world.holdings(world.own.id).tickets) == len(world.own.tickets) + 1
    shown = world.http.get(first.headers["location"], headers=world.own.auth)
    assert shown.status_code == 200
    assert shown.json()["subject"] == "Printer on fire"
    if world.zendesk is not None:
        assert len(world.zendesk.tickets_of(_zendesk_user(world))) == len(world.own.tickets) + 1


def _zendesk_user(world: World) -> str:
    assert world.hubspot is not None
    return str(world.hubspot.get(world.own.id)["zendesk_user_id"])


def test_update_profile_is_seen_by_the_next_read(world: World) -> None:
    path = f"/api/customers/{world.own.id}"
    before = world.http.get(path, headers=world.own.auth)
    changed = world.http.put(
        path,
        json={"company": "Difference Engines", "phone": "+44 20 7946 0999"},
        headers=world.own.auth,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["company"] == "Difference Engines"
    after = world.http.get(path, headers=world.own.auth)
    assert after.json()["company"] == "Difference Engines"
    assert after.json()["phone"] == "+44 20 7946 0999"
    assert after.headers["etag"] != before.headers["etag"]
    if world.hubspot is not None:
        assert world.hubspot.get(world.own.id)["company"] == "Difference Engines"


def test_delete_a_document(world: World) -> None:
    document = world.own.documents[0]
    deleted = world.http.delete(f"/api/documents/{document}", headers=world.own.auth)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert document not in world.holdings(world.own.id).documents
    again = world.http.delete(f"/api/documents/{document}", headers=world.own.auth)
    problem(again, 404, "NOT_FOUND")


def test_get_answers_304_to_its_own_etag(world: World) -> None:
    path = f"/api/customers/{world.own.id}/tickets?first=3"
    first = world.http.get(path, headers=world.own.auth)
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    for given in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        cached = world.http.get(path, headers={**world.own.auth, "If-None-Match": given})
        assert cached.status_code == 304, given
        assert cached.content == b""
        assert cached.headers["etag"] == etag
    stale = world.http.get(path, headers={**world.own.auth, "If-None-Match": '"other"'})
    assert stale.status_code == 200
    assert stale.json() == first.json()
