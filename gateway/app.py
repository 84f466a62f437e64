"""create_app(settings) -> Starlette: routes, middleware, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from gateway import tracing
from gateway.auth import Authenticator
from gateway.body_deadline import BodyDeadlines
from gateway.cache import build_cache_backend, build_entity_cache
from gateway.cache.incoming import IncomingLimits
from gateway.cache.response import ResponseCache
from gateway.context import Services
from gateway.cors import Cors
from gateway.domain import FileUploaded
from gateway.errors import BadUserInput, BodyTimeout, RequestRefused
from gateway.events.runtime import EventRuntime, build_outbox
from gateway.graphql_http import GraphQLEndpoint, Receive, Scope, Send
from gateway.graphql_ws import GraphQLWebSocket
from gateway.persisted import PersistedDocuments, load_manifest, sha256
from gateway.pipeline import OperationPipeline
from gateway.rest import OPERATIONS, RestEndpoint, openapi_document
from gateway.schema import build_schema
from gateway.schema.execution import GraphQLExecutor
from gateway.schema.internals import graphql_schema
from gateway.settings import Settings
from gateway.sources.local_files import LocalFileStore, SignedTokenError
from gateway.sources.registry import build_sources
from gateway.webhooks.endpoint import WebhookEndpoint
from gateway.webhooks.intake import Intake
from gateway.webhooks.registry import build_providers

__all__ = ["create_app", "served_app"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
API_DOCS_HTML = Path(__file__).parent / "templates" / "api-docs.html"


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers
    )


def _error_response(status: int, message: str, code: str, **extensions: Any) -> Response:
    return _json(
        {"errors": [{"message": message, "extensions": {"code": code, **extensions}}]}, status
    )


def build_services(settings: Settings) -> Services:
    backend = build_cache_backend(settings)
    cache = build_entity_cache(settings, backend)
    redis = getattr(backend, "client", None)  # RedisCache shares its pool for rate limits
    return Services(
        settings=settings, sources=build_sources(settings, redis), backend=backend, cache=cache
    )


class Gateway:
    """The request handlers, bound to one app's services."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services = build_services(settings)
        self.schema = build_schema()
        self.executor = GraphQLExecutor.from_settings(graphql_schema(self.schema), settings)
        self.auth = Authenticator(settings)
        responses = (
            ResponseCache(
                self.services.backend,
                prefix=settings.cache_prefix,
                ttls=self.services.cache.ttls,
                max_bytes=settings.response_cache_max_bytes,
            )
            if settings.response_cache == "on" and settings.gateway_batching
            else None
        )
        manifest = (
            load_manifest(settings.persisted_queries_manifest)
            if settings.persisted_queries_manifest
            else {}
        )
        # the REST facade's documents are the gateway's own: registered under any policy
        manifest = {**manifest, **{sha256(op.document): op.document for op in OPERATIONS}}
        documents = PersistedDocuments(
            settings.persisted_queries, manifest, self.services.backend, settings.cache_prefix
        )
        limits = IncomingLimits(
            settings.cache_prefix,
            {kind: settings.incoming_limit(kind) for kind in ("viewer", "service", "ip")},
            self.services.cache.pseudonym,
        )
        self.pipeline = OperationPipeline(
            self.executor,
            self.auth,
            documents,
            self.services.backend,
            limits if limits.limits else None,
            max_variable_depth=settings.query_max_variable_depth,
        )
        self.graphql = GraphQLEndpoint(
            self.services,
            self.pipeline,
            responses,
            Cors(settings.cors_origins),
            max_body_bytes=settings.request_max_bytes,
            graphiql=settings.graphiql,
        )
        self.rest = RestEndpoint(
            self.graphql,
            orjson.dumps(openapi_document(graphql_schema(self.schema))),
            API_DOCS_HTML.read_bytes() if settings.graphiql else None,
            settings.cors_origins,
            max_body_bytes=settings.request_max_bytes,
        )
        self.events = EventRuntime(settings, self.services.backend, self.services.sources.crm)
        self.services.live = self.events.live
        self.services.events = self.events.publisher
        self.services.outbox = build_outbox(settings, self.events, self.services)
        self.subscriptions = GraphQLWebSocket(
            self.services,
            self.pipeline,
            max_message_bytes=settings.request_max_bytes,
            max_operations_per_socket=settings.ws_max_subscriptions_per_socket,
            max_subscriptions_per_viewer=settings.ws_max_subscriptions_per_viewer,
        )
        self.webhooks = WebhookEndpoint(
            build_providers(settings),
            Intake(self.services, self.events.publisher),
            settings.public_base_url,
        )

        self._uploads_stop = asyncio.Event()
        self._uploads_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.events.start()
        queue_url = self.settings.s3_events_queue_url
        if queue_url and self.settings.files_source == "s3":
            # finished uploads are known from S3's own notifications (docs/design.md 6)
            from gateway.sources.s3 import S3FileStore, S3UploadNotifications

            store = self.services.sources.files
            assert isinstance(store, S3FileStore)
            notifications = S3UploadNotifications(
                store,
                queue_url,
                region=self.settings.aws_region,
                endpoint_url=self.settings.s3_endpoint_url,
            )
            intake = Intake(self.services, self.events.publisher)
            self._uploads_stop.clear()
            self._uploads_task = asyncio.create_task(
                notifications.run(intake.take, self._uploads_stop), name="s3-uploads"
            )

    async def aclose(self) -> None:
        task, self._uploads_task = self._uploads_task, None
        if task is not None:
            self._uploads_stop.set()
            try:
                # a long poll in its thread ends within its wait time; do not wait that long
                await asyncio.wait_for(task, 2)
            except TimeoutError:
                log.warning("s3 upload notifications did not stop in time")
        await self.events.aclose()
        await self.services.sources.aclose()
        await self.services.cache.aclose()
        await self.services.backend.aclose()

    # -- operations endpoints ---------------------------------------------------------------

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, _request: Request) -> Response:
        backend = self.services.backend
        if self.settings.redis_url:
            await backend.ping()
            cache = backend.status
        else:
            cache = "disabled"
        providers: dict[str, dict[str, str]] = {}
        for source in self.services.sources.all():
            # adapters on the upstream client expose their breaker; the sandbox has none
            providers[source.name] = {"breaker": str(getattr(source, "breaker_state", "closed"))}
            # OAuth adapters (QuickBooks, Xero) also their grant: "ok", "revoked", ...
            auth = getattr(source, "auth_state", None)
            if auth is not None:
                providers[source.name]["auth"] = str(auth)
        # A revoked grant is degraded, not 503: every replica shares it, so failing
        # readiness would take the whole portal out of rotation for one provider (DESIGN 11).
        degraded = cache == "degraded" or any(
            p["breaker"] != "closed" or p.get("auth", "ok") != "ok" for p in providers.values()
        )
        return JSONResponse(
            {"status": "degraded" if degraded else "ok", "cache": cache, "providers": providers}
        )

    async def metrics(self, _request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # -- sandbox file store ----------------------------------------------------------------

    def _local_store(self) -> LocalFileStore | None:
        store = self.services.sources.files
        return store if isinstance(store, LocalFileStore) else None

    async def download(self, request: Request) -> Response:
        store = self._local_store()
        if store is None:
            return Response("not found", status_code=404)
        try:
            path, stored = store.open_download(request.path_params["token"])
        except SignedTokenError:
            return Response("invalid or expired link", status_code=403)
        return FileResponse(
            path,
            media_type=stored.content_type,
            filename=stored.name,
            headers={"Cache-Control": "private, max-age=60"},
        )

    async def upload(self, request: Request) -> Response:
        store = self._local_store()
        if store is None:
            return Response("not found", status_code=404)
        token = request.path_params["token"]
        try:
            store.verify(token, "put")
        except SignedTokenError:
            return _json({"error": "invalid or expired upload form"}, 403)
        try:
            async with request.form(max_files=1, max_part_size=store.max_upload_bytes) as form:
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    return _json({"error": "the form must carry the file as field 'file'"}, 400)
                body = await upload.read(store.max_upload_bytes + 1)
                content_type = str(form.get("Content-Type") or upload.content_type or "")
        except Exception as error:  # multipart parse errors come in several types
            if isinstance(error, BodyTimeout):
                raise  # answered 408 like every late body (gateway.body_deadline), not as malformed
            log.info("rejected upload form", extra={"error": type(error).__name__})
            return _json({"error": "malformed multipart form"}, 400)
        try:
            stored = store.accept_upload(token, content_type, body)
        except BadUserInput as error:
            return _json({"error": error.message}, 400)
        except SignedTokenError:
            return _json({"error": "invalid or expired upload form"}, 403)
        await self.services.cache.drop_tags([f"files:{stored.customer_id}"])
        log.info(
            "file uploaded",
            extra={"customer_id": stored.customer_id, "file_id": stored.id, "size": stored.size},
        )
        event = FileUploaded(
            event_id=f"upload:{secrets.token_hex(12)}",
            customer_id=stored.customer_id,
            occurred_at=datetime.now(UTC),
            file=stored,
        )
        try:
            await self.events.publisher.publish(event)
        except Exception:  # the file is stored; a lost event must not fail the upload
            log.exception("FileUploaded not published", extra={"file_id": stored.id})
        return _json({"fileId": stored.id, "size": stored.size}, 201)


def _settle_heap() -> None:
    """Once the app has started, what exists (modules, the schema, clients, pools) lives as
    long as the process: gc.freeze takes it out of the cyclic collector's view.

    Without this, each full collection walked all of it again: ~120 ms a pass, two in ~340
    benchmark requests, landing on whichever request was running (cold portal-home p99 264
    and 289 ms against 114-123 ms frozen, same-period runs). The young generation's
    threshold stays CPython's: 7,000 instead of 700 changed no p50 beyond noise. Only for a
    served process (served_app): a test building many apps in one process would keep each
    one's reference cycles forever.
    """
    gc.collect()
    gc.freeze()


def served_app() -> GatewayApp:
    """The app `portal-gateway serve` runs (uvicorn's factory, in each worker process):
    create_app from the environment, with the heap settled once it has started."""
    return create_app(settle_heap=True)


def create_app(settings: Settings | None = None, *, settle_heap: bool = False) -> GatewayApp:
    """The ASGI app; `app.state.gateway` holds the handlers and their services."""
    settings = settings or Settings()
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # here, not at import: each uvicorn worker process needs its own exporter thread
        traced = tracing.configure_tracing(settings.otel_exporter_otlp_endpoint)
        try:
            await gateway.start()
            if settle_heap:
                _settle_heap()
            yield
        finally:
            try:
                await gateway.aclose()
            finally:
                if traced:
                    tracing.shutdown_tracing()

    routes = [
        Route("/healthz", gateway.healthz),
        Route("/readyz", gateway.readyz),
        Route("/metrics", gateway.metrics),
        Route("/files/{token}", gateway.download, methods=["GET"]),
        Route("/files/{token}", gateway.upload, methods=["POST"]),
        Route("/webhooks/{provider}", gateway.webhooks.handle, methods=["POST"]),
        WebSocketRoute("/graphql", gateway.subscriptions.handle),
    ]
    if settings.graphiql:  # the static files are GraphiQL's assets
        routes.append(
            Mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
        )
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={BodyTimeout: _refused})
    app.state.gateway = gateway
    return GatewayApp(app, gateway)


async def _refused(_request: Request, error: Exception) -> Response:
    """A refusal raised in a Starlette route: its status, with the /graphql error body."""
    assert isinstance(error, RequestRefused)
    return _error_response(error.status, error.message, error.code)


class GatewayApp:
    """HTTP /graphql and /api/... go straight to their raw ASGI endpoints; everything else to
    Starlette.
    Every HTTP request's body is read within HTTP_BODY_TIMEOUT (gateway.body_deadline)."""

    def __init__(self, app: Starlette, gateway: Gateway) -> None:
        self.app = app
        self.state = app.state
        self._graphql = gateway.graphql
        self._rest = gateway.rest
        self._bodies = BodyDeadlines(gateway.settings.http_body_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        receive, send = self._bodies.request(scope, receive, send)
        path = scope["path"]
        if path == "/graphql":
            await self._graphql(scope, receive, send)
        elif path.startswith("/api/"):
            await self._rest(scope, receive, send)
        else:
            await self.app(scope, receive, send)
