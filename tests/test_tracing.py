"""OpenTelemetry spans: request -> loader batch -> provider call, trace ids in the logs.

With OTEL_EXPORTER_OTLP_ENDPOINT unset nothing is installed (checked in a fresh process, so
no other test's imports count); set, `portal-gateway serve` exports over OTLP/HTTP to a
small receiver here.
"""

from __future__ import annotations

import gzip
import io
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import tracing
from gateway.app import create_app
from gateway.auth import mint_dev_token
from gateway.errors import IntegrationUnavailable
from gateway.settings import Settings
from gateway.upstream import UpstreamClient
from tests.servers import gateway_process, serve
from tests.upstream.fake_provider import FakeProvider

PORTAL_HOME = """query PortalHome { me { id name
  invoices(first: 5) { edges { node { id } } }
  tickets(first: 5) { edges { node { id } } }
  files(first: 5) { edges { node { id } } } } }"""
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure_tracing(None, exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


class HttpBilling:
    """The sandbox billing adapter behind one real provider call per batch, made the way a
    provider adapter makes them: through the UpstreamClient, here to a fake provider."""

    name = "stripe"

    def __init__(self, inner: Any, client: UpstreamClient) -> None:
        self._inner = inner
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def invoice_pages(self, queries: Sequence[Any]) -> Any:
        await self._client.request("GET", "/v1/invoices", operation="invoices.list")
        return await self._inner.invoice_pages(queries)


def _by_name(finished: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in finished}


def test_spans_nest_request_loader_batch_and_provider_call(
    spans: InMemorySpanExporter,
    make_settings: Callable[..., Settings],
    capture_logs: Callable[..., io.StringIO],
) -> None:
    settings = make_settings()
    buffer = capture_logs("INFO", settings)
    provider = FakeProvider()
    with serve(provider.app) as fake, serve(create_app(settings), port=settings.port) as server:
        gateway = server.server.config.app.state.gateway

        async def client() -> UpstreamClient:
            return UpstreamClient("stripe", base_url=fake.url, settings=settings)

        upstream = server.call(client())
        sources = gateway.services.sources
        sources.billing = HttpBilling(sources.billing, upstream)
        response = httpx.post(
            f"{server.url}/graphql",
            json={"query": PORTAL_HOME, "operationName": "PortalHome"},
            headers={"Authorization": f"Bearer {_token(settings)}", "traceparent": TRACEPARENT},
        )
        server.call(upstream.aclose())
    assert response.status_code == 200
    assert "errors" not in response.json()
    assert provider.count() == 1

    finished = spans.get_finished_spans()
    named = _by_name(finished)
    request = named["POST /graphql"]
    assert request.kind is SpanKind.SERVER
    # the caller's trace goes on: same trace id, its span as parent
    assert f"{request.context.trace_id:032x}" == TRACE_ID
    assert request.parent is not None
    assert f"{request.parent.span_id:016x}" == PARENT_ID
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["graphql.operation.name"] == "PortalHome"

    for loader in ("crm.customer", "billing.invoices", "helpdesk.tickets", "files.files"):
        batch = named[f"load {loader}"]
        assert batch.context.trace_id == request.context.trace_id
        assert batch.parent is not None
        assert batch.parent.span_id == request.context.span_id, loader
        assert batch.attributes is not None
        assert batch.attributes["gateway.batch_size"] == 1

    call = named["stripe invoices.list"]
    assert call.kind is SpanKind.CLIENT
    assert call.parent is not None
    assert call.parent.span_id == named["load billing.invoices"].context.span_id
    assert call.attributes is not None
    assert call.attributes["http.response.status_code"] == 200
    assert call.attributes["http.request.method"] == "GET"
    assert call.end_time is not None
    assert call.end_time <= named["load billing.invoices"].end_time  # type: ignore[operator]

    # the request's access line carries the trace id
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    (access,) = [line for line in lines if line["logger"] == "gateway.access"]
    assert access["trace_id"] == TRACE_ID
    assert access["span_id"] == f"{request.context.span_id:016x}"


async def test_failed_provider_calls_are_error_spans(spans: InMemorySpanExporter) -> None:
    provider = FakeProvider()
    provider.push(503, times=2)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, retry_max_attempts=2, retry_base_delay=0.01, retry_max_delay=0.02
    )
    with serve(provider.app) as fake:
        client = UpstreamClient("zendesk", base_url=fake.url, settings=settings)
        try:
            with tracing.span("caller"), pytest.raises(IntegrationUnavailable):
                await client.request("GET", "/api/v2/tickets", operation="tickets.show_many")
        finally:
            await client.aclose()
    finished = spans.get_finished_spans()
    attempts = [s for s in finished if s.name == "zendesk tickets.show_many"]
    caller = _by_name(finished)["caller"]
    assert len(attempts) == 2  # one span per attempt, both under the caller
    for attempt in attempts:
        assert attempt.parent is not None
        assert attempt.parent.span_id == caller.context.span_id
        assert attempt.status.status_code.name == "ERROR"
        assert attempt.attributes is not None
        assert attempt.attributes["http.response.status_code"] == 503


def _token(settings: Settings) -> str:
    secret = settings.dev_secret()
    assert secret is not None
    return mint_dev_token(secret, "1001")


UNSET_PROBE = """
import asyncio, json, sys
from pathlib import Path
from gateway import tracing
from gateway.app import create_app
from gateway.settings import Settings

settings = Settings(_env_file=None, auth_dev_secret="x" * 32, sandbox_files_dir=Path(sys.argv[1]))
app = create_app(settings)

async def main():
    async with app.app.router.lifespan_context(app.app):
        during = tracing.provider()
    return during

during = asyncio.run(main())
imported = "opentelemetry.sdk.trace" in sys.modules
import gc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

print(json.dumps({
    "provider": repr(during),
    "enabled": tracing.ENABLED,
    "sdk_trace_imported": imported,
    "tracer_providers": sum(isinstance(o, TracerProvider) for o in gc.get_objects()),
    "global_provider": type(trace.get_tracer_provider()).__name__,
    "noop_span": tracing.span("x") is tracing.span("y"),
    "request_span": repr(tracing.start_request("POST", "/graphql", {})),
}))
"""


def test_with_the_endpoint_unset_no_tracer_provider_is_installed(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin"}  # OTEL_EXPORTER_OTLP_ENDPOINT not among them
    out = subprocess.run(
        [sys.executable, "-c", UNSET_PROBE, str(tmp_path / "files")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=True,
    )
    probe = json.loads(out.stdout)
    assert probe == {
        "provider": "None",
        "enabled": False,
        # the tracing SDK is not even imported (redis-py imports OpenTelemetry's metrics)
        "sdk_trace_imported": False,
        "tracer_providers": 0,
        "global_provider": "ProxyTracerProvider",  # OpenTelemetry's default, untouched
        "noop_span": True,
        "request_span": "None",
    }


class OtlpReceiver:
    """A collector's OTLP/HTTP trace endpoint: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/traces", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        with self.lock:
            for resource in export.resource_spans:
                for scope in resource.scope_spans:
                    self.spans.extend(scope.spans)
        return Response(
            ExportTraceServiceResponse().SerializeToString(),
            media_type="application/x-protobuf",
        )


def test_serve_exports_spans_over_otlp_http_when_the_endpoint_is_set(tmp_path: Path) -> None:
    receiver = OtlpReceiver()
    secret = "dev-secret-for-the-otlp-test-0123456789"
    with serve(receiver.app) as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "AUTH_DEV_SECRET": secret}
        with gateway_process(tmp_path, env) as gateway:
            response = httpx.post(
                f"{gateway.url}/graphql",
                json={"query": PORTAL_HOME, "operationName": "PortalHome"},
                headers={
                    "Authorization": f"Bearer {mint_dev_token(secret, '1001')}",
                    "traceparent": TRACEPARENT,
                },
                timeout=30,
            )
            assert response.status_code == 200
            # SIGTERM: the lifespan's shutdown flushes the batch exporter
            gateway.process.send_signal(signal.SIGTERM)
            gateway.process.wait(30)
            logs = [
                json.loads(line) for line in gateway.stderr.splitlines() if line.startswith("{")
            ]

    spans = {span.name: span for span in receiver.spans}
    request = spans["POST /graphql"]
    assert request.trace_id.hex() == TRACE_ID
    assert request.parent_span_id.hex() == PARENT_ID
    for loader in ("crm.customer", "billing.invoices", "helpdesk.tickets", "files.files"):
        assert spans[f"load {loader}"].parent_span_id == request.span_id
        assert spans[f"load {loader}"].trace_id == request.trace_id
    (access,) = [line for line in logs if line.get("logger") == "gateway.access"]
    assert access["trace_id"] == TRACE_ID
    assert access["operation_name"] == "PortalHome"
