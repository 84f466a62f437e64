"""OpenTelemetry spans per request, per loader batch and per provider call.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set, and then free: every entry point checks the
module flag `ENABLED` first and answers None (or one shared no-op context) without creating
anything; OpenTelemetry's packages are imported only when tracing is switched on.

The gateway keeps its own TracerProvider instead of installing it as OpenTelemetry's global
one: spans come only from the places below, and an app built and closed in one process
(tests, `--reload`) can switch tracing off again, which a global provider cannot.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

__all__ = [
    "ENABLED",
    "RequestSpan",
    "client_span",
    "configure_tracing",
    "current_trace_ids",
    "end_request",
    "provider",
    "set_http_status",
    "shutdown_tracing",
    "span",
    "start_request",
]

ENABLED = False
_NOOP: contextlib.nullcontext[None] = contextlib.nullcontext()
_otel: _Otel | None = None


class _Otel:
    """What the span functions use of OpenTelemetry, looked up once when tracing starts."""

    def __init__(self, tracer_provider: TracerProvider) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = tracer_provider
        self.tracer = tracer_provider.get_tracer("gateway")
        self.attach = context.attach
        self.detach = context.detach
        self.in_context = trace.set_span_in_context
        self.current_span = trace.get_current_span
        self.propagator = TraceContextTextMapPropagator()
        self.server = SpanKind.SERVER
        self.client = SpanKind.CLIENT
        self.error = StatusCode.ERROR


def configure_tracing(
    endpoint: str | None,
    *,
    exporter: SpanExporter | None = None,
    service_name: str = "portal-gateway",
) -> bool:
    """Switch tracing on: spans to the OTLP/HTTP collector at `endpoint` (or to `exporter`).

    With neither, nothing happens and False is answered. `exporter` (tests) gets each span
    as it ends; the OTLP exporter batches in a background thread.
    """
    global ENABLED, _otel
    if endpoint is None and exporter is None:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    shutdown_tracing()
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name}
    )
    tracer_provider = TracerProvider(resource=resource)
    if exporter is not None:
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        assert endpoint is not None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        otlp = OTLPSpanExporter(endpoint=_traces_url(endpoint))
        tracer_provider.add_span_processor(BatchSpanProcessor(otlp))
    _otel = _Otel(tracer_provider)
    ENABLED = True
    return True


def _traces_url(endpoint: str) -> str:
    # OTEL_EXPORTER_OTLP_ENDPOINT names the collector's base URL; the OTLP/HTTP exporter,
    # given an explicit endpoint, posts to it as it is, so the signal's path is added here.
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def shutdown_tracing() -> None:
    """Export what is pending and switch tracing off."""
    global ENABLED, _otel
    ENABLED = False
    otel, _otel = _otel, None
    if otel is not None:
        otel.provider.shutdown()


def provider() -> TracerProvider | None:
    """The TracerProvider spans go to; None while tracing is off."""
    return _otel.provider if _otel is not None else None


def span(
    name: str, attributes: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """A child of the current span around a block; the shared no-op when tracing is off."""
    otel = _otel
    if otel is None:
        return _NOOP
    return otel.tracer.start_as_current_span(name, attributes=attributes)


def client_span(
    source: str, operation: str, method: str
) -> contextlib.AbstractContextManager[Span | None]:
    """The CLIENT span of one HTTP attempt to a provider; the shared no-op when off.

    No URL: paths carry customer ids and some providers take keys in the query string.
    """
    otel = _otel
    if otel is None:
        return _NOOP
    return otel.tracer.start_as_current_span(
        f"{source} {operation}",
        kind=otel.client,
        attributes={
            "http.request.method": method,
            "gateway.source": source,
            "gateway.operation": operation,
        },
    )


def set_http_status(span: Span | None, status: int) -> None:
    """Note an HTTP answer's status on a client span (an error from 500 on)."""
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 500 and _otel is not None:
        span.set_status(_otel.error)


class RequestSpan:
    """The SERVER span of one HTTP request, current until `end_request`."""

    __slots__ = ("otel", "span", "token")

    def __init__(self, otel: _Otel, span: Span, token: Any) -> None:
        self.otel = otel
        self.span = span
        self.token = token


def start_request(method: str, path: str, headers: Mapping[bytes, bytes]) -> RequestSpan | None:
    """Open a request's span, continuing the caller's trace when it sends `traceparent`."""
    otel = _otel
    if otel is None:
        return None
    traceparent = headers.get(b"traceparent")
    parent = None
    if traceparent is not None:
        carrier = {"traceparent": traceparent.decode("latin-1")}
        tracestate = headers.get(b"tracestate")
        if tracestate is not None:
            carrier["tracestate"] = tracestate.decode("latin-1")
        parent = otel.propagator.extract(carrier)
    request_span = otel.tracer.start_span(
        f"{method} {path}",
        context=parent,
        kind=otel.server,
        attributes={"http.request.method": method, "url.path": path},
    )
    return RequestSpan(otel, request_span, otel.attach(otel.in_context(request_span)))


def end_request(
    request_span: RequestSpan | None, status: int, attributes: Mapping[str, Any]
) -> None:
    """Close a request's span with its status and attributes (None values left out)."""
    if request_span is None:
        return
    otel, current = request_span.otel, request_span.span
    current.set_attribute("http.response.status_code", status)
    for key, value in attributes.items():
        if value is not None:
            current.set_attribute(key, value)
    if status >= 500:
        current.set_status(otel.error)
    current.end()
    otel.detach(request_span.token)


def current_trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span in hex, for log lines; None when off."""
    otel = _otel
    if otel is None:
        return None
    context = otel.current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
