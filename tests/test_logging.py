"""JSON logs: one access line per /graphql request, and no credential in any line.

The scenario test runs the whole gateway under uvicorn with the JSON handler of
`configure_logging` writing into a buffer, every secret of Settings set to a known value,
and then looks for each of those values, and each token and signature sent, in the output.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from gateway.app import create_app
from gateway.auth import mint_dev_token
from gateway.observability import RequestNote, request_note_var
from gateway.redaction import REDACTED, RedactionFilter
from gateway.settings import Settings
from gateway.upstream import UpstreamClient
from tests.conftest import GatewayServer
from tests.servers import serve
from tests.upstream.fake_provider import FakeProvider
from tests.webhooks.signing import stripe_event, stripe_headers

PORTAL_HOME = """query PortalHome { me { id name
  invoices(first: 10) { totalCount edges { node { id status total } } }
  tickets(first: 10) { totalCount edges { node { id subject } } }
  files(first: 10) { edges { node { id name } } } } }"""

# Every secret-bearing setting, set to a value that can be searched for.
SECRETS: dict[str, Any] = {
    "auth_dev_secret": "dev-signing-secret-Vq3zX8LmT2wR9kPs5nYc1hJd",
    "service_api_keys": ["svc-key-Tb7mN2vQ9xLcWe4R"],
    "hubspot_access_token": "pat-na1-11112222-3333-4444-5555-666677778888",
    "hubspot_client_secret": "hubspot-client-secret-Hq5W2nEr8tYu",
    "stripe_api_key": "sk_live_51Ab2Cd3Ef4Gh5Ij6Kl7Mn8Op",
    "stripe_webhook_secret": "whsec_Zx9Cv8Bn7Mq6Wl5Ek4Rj3Th2",
    "zendesk_api_token": "zendesk-api-token-Pm4Ln7Kb2Jv5",
    "zendesk_webhook_secret": "zendesk-signing-secret-Gf6Dh3Sa9",
    "quickbooks_client_secret": "qbo-client-secret-Wy2Ux5Ti8Or1",
    "xero_client_secret": "xero-client-secret-Ey4Rt7Yu1Io3",
    "token_encryption_key": "token-encryption-key-Kd8Lf2Jg5Hh",
}


def _secret_values() -> list[str]:
    values: list[str] = []
    for value in SECRETS.values():
        values.extend(value if isinstance(value, list) else [value])
    return values


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def _settled(buffer: io.StringIO, access_lines: int) -> list[dict[str, Any]]:
    """The lines, once the server thread wrote the access lines of the requests made: each
    is written after its response went out, so a client can be faster than the log."""
    deadline = time.monotonic() + 5
    while len(_access(_lines(buffer))) < access_lines and time.monotonic() < deadline:
        time.sleep(0.01)
    return _lines(buffer)


def _access(lines: list[dict[str, Any]], operation: str | None = None) -> list[dict[str, Any]]:
    return [
        line
        for line in lines
        if line["logger"] == "gateway.access"
        and (operation is None or line.get("operation_name") == operation)
    ]


# -- the redaction filter on its own ---------------------------------------------------------


def _redact(message: str, *args: object, secrets: list[str] | None = None, **extra: Any) -> str:
    """The record's message and extras after the filter, as one JSON text."""
    record = logging.LogRecord("t", logging.INFO, __file__, 1, message, args or None, None)
    record.__dict__.update(extra)
    RedactionFilter(secrets or []).filter(record)
    fields = {key: record.__dict__[key] for key in extra}
    return json.dumps({"message": record.getMessage(), **fields}, default=str)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("calling with Authorization: Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
        ("bearer Zm9vYmFyYmF6cXV4 rejected", "Zm9vYmFyYmF6cXV4"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl expired", "c2lnbmF0dXJl"),
        ("stripe key sk_test_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc"),
        ("restricted rk_live_51H8xYzAbCdEf", "51H8xYzAbCdEf"),
        ("headers {'x-api-key': 'k-1234567890'}", "k-1234567890"),
        ("X-API-Key=k-0987654321 refused", "k-0987654321"),
        (
            "Stripe-Signature: t=1700000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff",
            "5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff",
        ),
        (
            "header t=1700000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e7 arrived",
            "5257a869e7ecebeda32affa62cdca3fa51cad7e7",
        ),
        ("GET /v1/invoices?api_key=abcdef123456&limit=1", "abcdef123456"),
        ("redis://:hunter2hunter2@redis:6379/0 unreachable", "hunter2hunter2"),
        ("client_secret=s3cr3tv4lue; grant=refresh", "s3cr3tv4lue"),
        ("X-Amz-Signature=8f3b2c1d0e9a7b6c5d4e3f2a1b0c9d8e", "8f3b2c1d0e9a7b6c5d4e3f2a1b0c9d8e"),
        ("hubspot pat-eu1-0a1b2c3d-4e5f-6789-abcd-ef0123456789 refused", "0a1b2c3d-4e5f-6789"),
        ("AWS key AKIAIOSFODNN7EXAMPLE in env", "AKIAIOSFODNN7EXAMPLE"),
    ],
)
def test_patterns_redact_credentials_in_messages(text: str, secret: str) -> None:
    out = _redact(text)
    assert secret not in out
    assert REDACTED in out


def test_configured_secrets_are_redacted_wherever_they_appear() -> None:
    secret = "plain-looking-secret-value"
    out = _redact("upstream said %s", f"denied for {secret}!", secrets=[secret])
    assert secret not in out
    assert "upstream said denied for [REDACTED]!" in out


def test_extras_are_redacted_by_name_and_by_content() -> None:
    out = _redact(
        "call failed",
        headers={"Authorization": "Bearer zzzzzzzzzzzz", "Accept": "application/json"},
        api_key="k-112233445566",
        detail=["see sk_live_abcdefghijkl"],
        attempt=2,
    )
    for secret in ("zzzzzzzzzzzz", "k-112233445566", "abcdefghijkl"):
        assert secret not in out
    assert "application/json" in out
    assert '"attempt": 2' in out


def test_ordinary_lines_pass_unchanged() -> None:
    text = "stripe invoices.list attempt 1 failed: HTTP 503 (token bucket has 3 left)"
    record = logging.LogRecord("t", logging.INFO, __file__, 1, text, None, None)
    RedactionFilter(["a-configured-secret"]).filter(record)
    assert record.getMessage() == text


def test_tracebacks_are_redacted(capture_logs: Callable[..., io.StringIO]) -> None:
    secret = "exception-secret-value-123"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, stripe_api_key=secret, auth_dev_secret="d" * 32
    )
    buffer = capture_logs(settings=settings)
    try:
        raise RuntimeError(f"provider refused sk_live_{secret[:10]}xx and {secret}")
    except RuntimeError:
        logging.getLogger("gateway.test").exception("adapter failed")
    (line,) = _lines(buffer)
    assert "RuntimeError" in line["exc"]
    assert secret not in buffer.getvalue()
    assert REDACTED in line["exc"]


def test_httpx_request_lines_are_silenced(capture_logs: Callable[..., io.StringIO]) -> None:
    buffer = capture_logs("DEBUG")
    logging.getLogger("httpx").info("HTTP Request: GET https://x.test/?key=1 200 OK")
    logging.getLogger("httpx").warning("connection pool is full")
    messages = [line["message"] for line in _lines(buffer)]
    assert messages == ["connection pool is full"]


# -- access lines ---------------------------------------------------------------------------


def test_access_line_reports_viewer_operation_duration_and_calls(
    gateway_server: GatewayServer, capture_logs: Callable[..., io.StringIO]
) -> None:
    buffer = capture_logs("INFO", gateway_server.settings)
    token = gateway_server.token("1001")
    response = gateway_server.query(PORTAL_HOME, token=token)
    assert response.status_code == 200
    again = gateway_server.query(PORTAL_HOME, token=token)  # a whole-response cache hit
    assert again.status_code == 200
    anonymous = gateway_server.query("{ me { id } }")  # no operationName: taken from the doc
    assert anonymous.status_code == 200

    lines = _settled(buffer, 2)
    (home,) = _access(lines, "PortalHome")  # the hit is logged at DEBUG, not at INFO
    assert home["level"] == "info"
    assert home["status"] == 200
    assert home["viewer_id"] == "1001"
    assert home["request_id"] == response.headers["x-request-id"]
    assert home["duration_ms"] > 0
    assert home["cache"] == "miss"
    # customer, then invoices, tickets and files: one adapter call each, batched
    assert home["source_calls"] == 4
    assert home["upstream_calls"] == 0  # sandbox adapters make no HTTP calls
    assert token not in buffer.getvalue()
    (unnamed,) = [line for line in _access(lines) if line["operation_name"] is None]
    assert unnamed["viewer_id"] is None


def test_cache_hits_are_logged_only_at_debug(
    gateway_server: GatewayServer, capture_logs: Callable[..., io.StringIO]
) -> None:
    buffer = capture_logs("DEBUG", gateway_server.settings)
    token = gateway_server.token("1001")
    for _ in range(3):
        assert gateway_server.query(PORTAL_HOME, token=token).status_code == 200
    home = _access(_settled(buffer, 3), "PortalHome")
    assert [(line["level"], line["cache"]) for line in home] == [
        ("info", "miss"),
        ("debug", "hit"),
        ("debug", "hit"),
    ]
    assert [line["source_calls"] for line in home] == [4, 0, 0]


# a JWT short enough to pass as a request id (real ones are longer and refused outright)
SHORT_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMDAxIn0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "sent",
    [
        "a" * 60_000,  # echoed and written on every line of the request
        "a" * 65,
        f"Bearer {SHORT_JWT}",  # a credential pasted into the wrong header
        "id with spaces",
        'quote"and\\backslash',
    ],
    ids=["60KB", "65 chars", "bearer", "spaces", "quotes"],
)
def test_a_long_or_unsafe_request_id_is_replaced_by_a_fresh_one(
    gateway_server: GatewayServer, capture_logs: Callable[..., io.StringIO], sent: str
) -> None:
    buffer = capture_logs("INFO", gateway_server.settings)
    response = gateway_server.query("{ __typename }", headers={"X-Request-Id": sent})
    assert response.status_code == 200
    fresh = response.headers["x-request-id"]
    assert fresh != sent
    assert len(fresh) == 16
    (line,) = _access(_settled(buffer, 1))
    assert line["request_id"] == fresh
    assert sent not in buffer.getvalue()


def test_a_short_safe_request_id_is_kept(gateway_server: GatewayServer) -> None:
    sent = "edge-7f3a.2b:01_" + "x" * 48  # 64 characters of the allowed ones
    response = gateway_server.query("{ __typename }", headers={"X-Request-Id": sent})
    assert response.headers["x-request-id"] == sent


def test_a_jwt_shaped_request_id_is_redacted_in_log_lines(
    gateway_server: GatewayServer, capture_logs: Callable[..., io.StringIO]
) -> None:
    """Its alphabet is a request id's, so it is kept and echoed to its sender; no log line
    carries it, the access line included, where the id is added after the message."""
    buffer = capture_logs("INFO", gateway_server.settings)
    response = gateway_server.query("{ __typename }", headers={"X-Request-Id": SHORT_JWT})
    assert response.headers["x-request-id"] == SHORT_JWT
    (line,) = _access(_settled(buffer, 1))
    assert line["request_id"] == REDACTED
    assert "c2lnbmF0dXJl" not in buffer.getvalue()


async def test_upstream_calls_are_counted_per_request_attempts_included(
    capture_logs: Callable[..., io.StringIO],
) -> None:
    provider = FakeProvider()
    provider.push(503)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, retry_base_delay=0.01, retry_max_delay=0.02, upstream_timeout=5
    )
    note = RequestNote()
    token = request_note_var.set(note)
    with serve(provider.app) as server:
        client = UpstreamClient("stripe", base_url=server.url, settings=settings)
        try:
            await client.request("GET", "/v1/invoices", operation="invoices.list")  # 503, 200
            await client.request("GET", "/v1/customers", operation="customers.list")
        finally:
            await client.aclose()
            request_note_var.reset(token)
    assert note.upstream_calls == 3
    assert provider.count() == 3


# -- the whole scenario, looking for secrets -------------------------------------------------


def test_no_secret_reaches_the_logs_in_a_whole_scenario(
    make_settings: Callable[..., Settings], capture_logs: Callable[..., io.StringIO]
) -> None:
    settings = make_settings(**SECRETS, retry_base_delay=0.01, retry_max_delay=0.02)
    buffer = capture_logs("DEBUG", settings)
    dev_secret = SECRETS["auth_dev_secret"]
    service_key = SECRETS["service_api_keys"][0]
    customer_token = mint_dev_token(dev_secret, "1001")
    staff_token = mint_dev_token(dev_secret, None, ["staff"])
    forged = jwt.encode({"sub": "1001", "customer_id": "1001"}, "x" * 32, algorithm="HS256")
    sent: list[str] = [customer_token, staff_token, forged, "svc-key-wrong-9Hx2"]

    provider = FakeProvider()
    provider.push(503, times=3)
    with serve(create_app(settings), port=settings.port) as server, serve(provider.app) as fake:
        http = httpx.Client(base_url=server.url, timeout=30)

        def graphql(query: str, headers: dict[str, str], **body: Any) -> httpx.Response:
            return http.post("/graphql", json={"query": query, **body}, headers=headers)

        customer = {"Authorization": f"Bearer {customer_token}"}
        # the portal home page, twice (the second is a whole-response cache hit)
        for _ in range(2):
            assert graphql(PORTAL_HOME, customer).status_code == 200
        # mutations
        update = graphql(
            "mutation Save($p: String) { updateProfile(input: {phone: $p}) { id phone } }",
            customer,
            variables={"p": "+44 20 7946 0999"},
            operationName="Save",
        )
        assert update.json()["data"]["updateProfile"]["phone"] == "+44 20 7946 0999"
        ticket = graphql(
            'mutation { createTicket(input: {subject: "Help", description: "Please"}) '
            "{ ticket { id } } }",
            customer,
        )
        assert ticket.json()["data"]["createTicket"]["ticket"]["id"]
        # staff and a service caller
        staff = {"Authorization": f"Bearer {staff_token}"}
        assert graphql('{ customers(ids: ["1002", "1003"]) { id } }', staff).status_code == 200
        service = graphql('{ customer(id: "1002") { id } }', {"X-API-Key": service_key})
        assert service.status_code == 200
        # a failing provider: the billing field fails, the rest answers
        gateway = server.server.config.app.state.gateway
        gateway.services.sources.billing.fail = True
        failed = graphql('{ customer(id: "1004") { id invoices { totalCount } } }', staff).json()
        assert failed["errors"][0]["extensions"]["code"] == "INTEGRATION_UNAVAILABLE"
        gateway.services.sources.billing.fail = False

        # an adapter raising something unexpected, its message full of credentials
        billing = gateway.services.sources.billing
        original = billing.invoice_pages

        async def leaky(queries: Any) -> Any:
            raise RuntimeError(
                f"HTTP 401 for Authorization: Bearer {SECRETS['stripe_api_key']}; "
                f"key={SECRETS['hubspot_access_token']} token {customer_token}"
            )

        billing.invoice_pages = leaky
        masked = graphql('{ customer(id: "1005") { invoices { totalCount } } }', staff).json()
        assert masked["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
        billing.invoice_pages = original

        # refused credentials
        assert graphql("{ me { id } }", {"Authorization": f"Bearer {forged}"}).status_code == 401
        assert graphql("{ me { id } }", {"X-API-Key": "svc-key-wrong-9Hx2"}).status_code == 401
        assert graphql("{ me { id } }", {"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401

        # webhooks: a good Stripe delivery and a forged one
        body = stripe_event("evt_logging_1")
        headers = stripe_headers(body, secret=SECRETS["stripe_webhook_secret"])
        sent.extend(_signatures(headers["Stripe-Signature"]))
        assert http.post("/webhooks/stripe", content=body, headers=headers).status_code == 200
        forged_sig = stripe_headers(body, secret="whsec_not_the_real_one_123")
        sent.extend(_signatures(forged_sig["Stripe-Signature"]))
        assert http.post("/webhooks/stripe", content=body, headers=forged_sig).status_code == 400

        # a provider call through the upstream client that fails with a key in its URL
        async def upstream_call() -> None:
            client = UpstreamClient(
                "stripe",
                base_url=fake.url,
                settings=settings,
                headers={"Authorization": f"Bearer {SECRETS['stripe_api_key']}"},
            )
            try:
                await client.request(
                    "GET",
                    "/v1/invoices",
                    operation="invoices.list",
                    params={"api_key": SECRETS["stripe_api_key"]},
                )
            except Exception as error:
                logging.getLogger("gateway.test").warning("call failed: %r", error)
            finally:
                await client.aclose()

        server.call(upstream_call())
        http.close()

    text = buffer.getvalue()
    lines = _lines(buffer)  # every line is one JSON object
    for value in [*_secret_values(), *sent]:
        assert value not in text, f"{value[:12]}... reached the logs"
    # and the lines are still useful
    assert {line["operation_name"] for line in _access(lines)} >= {"PortalHome", "Save"}
    assert any(line.get("cache") == "hit" for line in _access(lines))
    assert any(line["status"] == 401 for line in _access(lines))
    unexpected = [line for line in lines if line["message"].startswith("unexpected error")]
    assert unexpected
    assert "RuntimeError" in unexpected[0]["exc"]
    assert any(line["message"] == "webhook refused" for line in lines)
    upstream = [line for line in lines if line["logger"] == "gateway.upstream"]
    assert [line["attempt"] for line in upstream] == [1, 2, 3]


def _signatures(header: str) -> list[str]:
    """The v1 signatures of a Stripe-Signature header."""
    return [part[3:] for part in header.split(",") if part.startswith("v1=")]
