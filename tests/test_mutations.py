"""Every mutation of the schema against the sandbox."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY

from tests.conftest import GatewayServer

CREATE = """mutation($input: CreateTicketInput!) { createTicket(input: $input) {
  clientMutationId ticket { id subject description status priority requester { id } } } }"""


def test_create_ticket_appears_in_the_list(gateway_server: GatewayServer) -> None:
    token = gateway_server.token("1001")
    gateway_server.query("{ me { tickets { totalCount } } }", token=token)  # warm the cache
    payload = gateway_server.query(
        CREATE,
        {"input": {"subject": "Refund", "description": "Please refund INV-3", "priority": "high"}},
        token=token,
    ).json()["data"]["createTicket"]
    ticket = payload["ticket"]
    assert ticket["status"] == "NEW"
    assert ticket["priority"] == "high"
    assert ticket["requester"] == {"id": "1001"}
    tickets = gateway_server.query(
        "{ me { tickets(first: 1) { totalCount edges { node { id } } } } }", token=token
    ).json()["data"]["me"]["tickets"]
    assert tickets["totalCount"] == 13
    assert tickets["edges"][0]["node"]["id"] == ticket["id"]


def test_create_ticket_retried_with_the_same_client_mutation_id_creates_one(
    gateway_server: GatewayServer,
) -> None:
    token = gateway_server.token("1001")
    variables = {"input": {"subject": "Hi", "description": "Once", "clientMutationId": "m-1"}}
    first = gateway_server.query(CREATE, variables, token=token).json()["data"]["createTicket"]
    again = gateway_server.query(CREATE, variables, token=token).json()["data"]["createTicket"]
    assert first == again
    assert first["clientMutationId"] == "m-1"
    assert gateway_server.sources.helpdesk.calls["create_ticket"] == 1
    other = gateway_server.query(
        CREATE, {"input": {**variables["input"], "clientMutationId": "m-2"}}, token=token
    ).json()["data"]["createTicket"]
    assert other["ticket"]["id"] != first["ticket"]["id"]


def test_create_ticket_validates_its_input(gateway_server: GatewayServer) -> None:
    body = gateway_server.query(
        CREATE, {"input": {"subject": "  ", "description": "x"}}, token=gateway_server.token()
    ).json()
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "subject"}
    body = gateway_server.query(
        CREATE,
        {"input": {"subject": "s", "description": "x", "priority": "asap"}},
        token=gateway_server.token(),
    ).json()
    assert body["errors"][0]["extensions"]["field"] == "priority"


UPDATE = """mutation($input: UpdateProfileInput!) { updateProfile(input: $input) {
  id name phone company } }"""


def test_update_profile_is_visible_at_once(gateway_server: GatewayServer) -> None:
    token = gateway_server.token("1001")
    assert gateway_server.query("{ me { phone } }", token=token).json()["data"]["me"]["phone"]
    updated = gateway_server.query(
        UPDATE, {"input": {"phone": "+44 20 1234 5678", "company": "Engines"}}, token=token
    ).json()["data"]["updateProfile"]
    assert updated["phone"] == "+44 20 1234 5678"
    me = gateway_server.query("{ me { name phone company } }", token=token).json()["data"]["me"]
    assert me == {"name": "Ada Lovelace", "phone": "+44 20 1234 5678", "company": "Engines"}


def test_update_profile_refuses_bad_values(gateway_server: GatewayServer) -> None:
    token = gateway_server.token("1001")
    for fields, field in (({"name": ""}, "name"), ({"phone": "call me"}, "phone"), ({}, "input")):
        body = gateway_server.query(UPDATE, {"input": fields}, token=token).json()
        assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": field}
    unknown = gateway_server.query(UPDATE, {"input": {"email": "x@y.z"}}, token=token).json()
    assert unknown["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    me = gateway_server.query("{ me { name phone } }", token=token).json()["data"]["me"]
    assert me["name"] == "Ada Lovelace"


UPLOAD = """mutation($input: FileUploadInput!) { requestFileUpload(input: $input) {
  url fileId expiresAt fields { name value } } }"""


def test_upload_through_the_signed_form_then_download(gateway_server: GatewayServer) -> None:
    token = gateway_server.token("1001")
    content = b"%PDF-1.4 tiny\n"
    form = gateway_server.query(
        UPLOAD,
        {
            "input": {
                "name": "statement.pdf",
                "contentType": "application/pdf",
                "size": len(content),
            }
        },
        token=token,
    ).json()["data"]["requestFileUpload"]
    fields = {f["name"]: f["value"] for f in form["fields"]}
    posted = httpx.post(
        form["url"], data=fields, files={"file": ("statement.pdf", content, "application/pdf")}
    )
    assert posted.status_code == 201
    assert posted.json()["fileId"] == form["fileId"]
    found = gateway_server.query(
        "query($id: ID!) { file(id: $id) { name size downloadUrl } }",
        {"id": form["fileId"]},
        token=token,
    ).json()["data"]["file"]
    assert found["size"] == len(content)
    assert httpx.get(found["downloadUrl"]).content == content
    files = gateway_server.query("{ me { files { totalCount } } }", token=token).json()
    assert files["data"]["me"]["files"]["totalCount"] == 11


def test_upload_limits_are_enforced_by_gateway_and_form(gateway_server: GatewayServer) -> None:
    token = gateway_server.token("1001")
    too_big = gateway_server.query(
        UPLOAD,
        {"input": {"name": "a.pdf", "contentType": "application/pdf", "size": 26_214_401}},
        token=token,
    ).json()
    assert too_big["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "size"}
    wrong_type = gateway_server.query(
        UPLOAD,
        {"input": {"name": "a.exe", "contentType": "application/x-msdownload", "size": 10}},
        token=token,
    ).json()
    assert wrong_type["errors"][0]["extensions"]["field"] == "contentType"
    form = gateway_server.query(
        UPLOAD,
        {"input": {"name": "small.txt", "contentType": "text/plain", "size": 5}},
        token=token,
    ).json()["data"]["requestFileUpload"]
    fields = {f["name"]: f["value"] for f in form["fields"]}
    larger = httpx.post(
        form["url"], data=fields, files={"file": ("small.txt", b"x" * 50, "text/plain")}
    )
    assert larger.status_code == 400
    fields["Content-Type"] = "application/pdf"
    retyped = httpx.post(
        form["url"], data=fields, files={"file": ("small.txt", b"x", "text/plain")}
    )
    assert retyped.status_code == 400
    forged = httpx.post(form["url"][:-3] + "abc", data=fields, files={"file": ("s.txt", b"x")})
    assert forged.status_code == 403


def test_delete_file(gateway_server: GatewayServer) -> None:
    token = gateway_server.token("1001")
    first = gateway_server.query(
        "{ me { files(first: 1) { edges { node { id } } } } }", token=token
    ).json()["data"]["me"]["files"]["edges"][0]["node"]["id"]
    published = REGISTRY.get_sample_value("gateway_events_published_total", {"type": "FileDeleted"})
    deleted = gateway_server.query(
        "mutation($id: ID!) { deleteFile(id: $id) { deletedFileId } }", {"id": first}, token=token
    ).json()
    assert deleted["data"]["deleteFile"] == {"deletedFileId": first}
    # announced on the bus (and to live subscribers) like any other change
    assert (
        REGISTRY.get_sample_value("gateway_events_published_total", {"type": "FileDeleted"})
        == (published or 0) + 1
    )
    after = gateway_server.query("{ me { files { totalCount } } }", token=token).json()
    assert after["data"]["me"]["files"]["totalCount"] == 9
    again = gateway_server.query(
        "mutation($id: ID!) { deleteFile(id: $id) { deletedFileId } }", {"id": first}, token=token
    ).json()
    assert again["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_billing_portal_session(gateway_server: GatewayServer) -> None:
    body = gateway_server.query(
        'mutation { createBillingPortalSession(returnUrl: "https://portal.example.com/billing") '
        "{ url expiresAt } }",
        token=gateway_server.token("1001"),
    ).json()
    session = body["data"]["createBillingPortalSession"]
    assert "cus_sbx0001" in session["url"]
    assert session["expiresAt"]
    bad = gateway_server.query(
        'mutation { createBillingPortalSession(returnUrl: "javascript:alert(1)") { url } }',
        token=gateway_server.token("1001"),
    ).json()
    assert bad["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "returnUrl"}
