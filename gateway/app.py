"""create_app(settings) -> Starlette: routes, middleware, lifespan."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from graphql import OperationType
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.auth import Authenticator
from gateway.cache.base import CacheBackend
from gateway.cache.entity import EntityCache
from gateway.cache.memory import MemoryCache
from gateway.cache.response import CachedResponse, ResponseCache, with_cache_extension
from gateway.context import Context, Services
from gateway.errors import BadUserInput, GatewayError
from gateway.observability import REQUEST_SECONDS, REQUESTS, RESPONSE_CACHE, request_id_var
from gateway.schema import build_schema
from gateway.schema.execution import GraphQLExecutor, operation_type
from gateway.settings import Settings
from gateway.sources.local_files import LocalFileStore, SignedTokenError
from gateway.sources.registry import build_sources

__all__ = ["create_app"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
GRAPHIQL_HTML = Path(__file__).parent / "templates" / "graphiql.html"
MAX_BODY_BYTES = 1_000_000


class GraphQLRequestError(Exception):
    """A request that is not GraphQL over HTTP: answered with its status and one error."""

    def __init__(self, status: int, message: str, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers
    )


def _error_response(status: int, message: str, code: str, **extensions: Any) -> Response:
    return _json(
        {"errors": [{"message": message, "extensions": {"code": code, **extensions}}]}, status
    )


def build_cache_backend(settings: Settings) -> CacheBackend:
    if settings.redis_url:
        from gateway.cache.redis import RedisCache

        return RedisCache(settings.redis_url)
    return MemoryCache()


def build_services(settings: Settings) -> Services:
    backend = build_cache_backend(settings)
    cache = EntityCache(
        backend,
        prefix=settings.cache_prefix,
        ttls={k: settings.ttl(k) for k in ("crm", "billing", "helpdesk", "files")},
        stale_ttl=settings.cache_stale_ttl,
    )
    return Services(
        settings=settings, sources=build_sources(settings), backend=backend, cache=cache
    )


class Gateway:
    """The request handlers, bound to one app's services."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services = build_services(settings)
        self.schema = build_schema()
        self.executor = GraphQLExecutor(
            self.schema._schema,
            max_depth=settings.query_max_depth,
            max_aliases=settings.query_max_aliases,
            introspection=settings.introspection,
        )
        self.auth = Authenticator(settings)
        self.responses = (
            ResponseCache(
                self.services.backend,
                prefix=settings.cache_prefix,
                ttls=self.services.cache.ttls,
                max_bytes=settings.response_cache_max_bytes,
            )
            if settings.response_cache == "on" and settings.gateway_batching
            else None
        )

    async def aclose(self) -> None:
        await self.services.sources.aclose()
        await self.services.backend.aclose()

    # -- /graphql ------------------------------------------------------------------------

    async def graphql(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id") or secrets.token_hex(8)
        token = request_id_var.set(request_id)
        status = 500
        try:
            if (
                request.method == "GET"
                and "query" not in request.query_params
                and "text/html" in request.headers.get("accept", "")
            ):
                status = 200
                return self.graphiql()
            response = await self._graphql(request, request_id)
            status = response.status_code
            response.headers["x-request-id"] = request_id
            return response
        finally:
            REQUESTS.labels("graphql", str(status)).inc()
            REQUEST_SECONDS.labels("graphql").observe(time.perf_counter() - started)
            request_id_var.reset(token)

    async def _graphql(self, request: Request, request_id: str) -> Response:
        try:
            query, variables, operation_name, extensions = await self._read_params(request)
        except GraphQLRequestError as error:
            return _error_response(error.status, error.message, error.code)
        try:
            viewer = await self.auth.viewer(
                request.headers.get("authorization"), request.headers.get("x-api-key")
            )
        except GatewayError as error:
            return _error_response(401, error.message, error.code)

        # The hit path: one cache round trip, the stored bytes out; no parse, no resolver.
        responses = self.responses
        cache_key = None
        report_cache = bool(extensions and extensions.get("cache"))
        if responses is not None and viewer.authenticated:
            cache_key = responses.key(viewer.scope, query, variables, operation_name)
            if "no-cache" in request.headers.get("cache-control", ""):
                RESPONSE_CACHE.labels("bypass").inc()
            else:
                cached = await responses.get(cache_key)
                if cached is not None:
                    RESPONSE_CACHE.labels("hit").inc()
                    return self._cached_response(request, cached, report_cache)
                RESPONSE_CACHE.labels("miss").inc()

        prepared = self.executor.prepare(query)
        if prepared.errors:
            return _json({"errors": prepared.errors}, 400)
        kind = operation_type(prepared, operation_name)
        if kind is None:
            return _error_response(
                400,
                "operationName does not name an operation of the document",
                "GRAPHQL_VALIDATION_FAILED",
            )
        if request.method == "GET" and kind is not OperationType.QUERY:
            return _error_response(405, "only queries may be sent with GET", "BAD_REQUEST")
        if kind is OperationType.SUBSCRIPTION:
            return _error_response(
                400, "subscriptions are served over WebSocket (graphql-transport-ws)", "BAD_REQUEST"
            )
        context = Context(self.services, viewer, request_id, request)
        result = await self.executor.execute(prepared, context, variables, operation_name)
        body = orjson.dumps(result)
        stored = None
        if cache_key is not None and kind is OperationType.QUERY:
            if "errors" in result or "extensions" in result:
                RESPONSE_CACHE.labels("skip").inc()  # partial or stale answers are never kept
            else:
                stored = await self.responses.put(  # type: ignore[union-attr]
                    cache_key, body, context.touched_kinds, context.touched_tags
                )
        if stored is not None:
            return self._cached_response(request, stored, report_cache, hit=False)
        if report_cache and "extensions" not in result:
            body = with_cache_extension(body, hit=False, age=0.0)
        return Response(body, media_type="application/json")

    def _cached_response(
        self, request: Request, cached: CachedResponse, report: bool, hit: bool = True
    ) -> Response:
        headers = {"ETag": cached.etag, "Cache-Control": "private, no-cache"}
        if request.method == "GET" and request.headers.get("if-none-match") == cached.etag:
            return Response(status_code=304, headers=headers)
        body = (
            with_cache_extension(cached.body, hit, cached.age if hit else 0.0)
            if report
            else cached.body
        )
        return Response(body, media_type="application/json", headers=headers)

    async def _read_params(
        self, request: Request
    ) -> tuple[str, dict[str, Any] | None, str | None, dict[str, Any] | None]:
        if request.method == "GET":
            params = request.query_params
            raw_variables = params.get("variables")
            raw_extensions = params.get("extensions")
            return (
                params.get("query", ""),
                _variables(orjson_loads(raw_variables) if raw_variables else None),
                params.get("operationName") or None,
                _variables(orjson_loads(raw_extensions) if raw_extensions else None),
            )
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("application/json", "application/graphql-response+json"):
            # also what keeps plain HTML forms (CSRF) from reaching the executor
            raise GraphQLRequestError(
                415, "send GraphQL as POST with Content-Type: application/json", "BAD_REQUEST"
            )
        body = await _read_body(request)
        payload = orjson_loads(body)
        if not isinstance(payload, dict):
            raise GraphQLRequestError(400, "the body must be a JSON object", "BAD_REQUEST")
        query = payload.get("query")
        if not isinstance(query, str) or not query.strip():
            raise GraphQLRequestError(400, "the body must carry a 'query' string", "BAD_REQUEST")
        name = payload.get("operationName")
        if name is not None and not isinstance(name, str):
            raise GraphQLRequestError(400, "operationName must be a string", "BAD_REQUEST")
        extensions = payload.get("extensions")
        return (
            query,
            _variables(payload.get("variables")),
            name or None,
            extensions if isinstance(extensions, dict) else None,
        )

    def graphiql(self) -> Response:
        return HTMLResponse(GRAPHIQL_HTML.read_text())

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
            breaker = getattr(source, "breaker_state", None)
            providers[source.name] = {"breaker": breaker() if callable(breaker) else "closed"}
        degraded = cache == "degraded" or any(p["breaker"] != "closed" for p in providers.values())
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
        return _json({"fileId": stored.id, "size": stored.size}, 201)


def orjson_loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise GraphQLRequestError(400, "the body is not valid JSON", "BAD_REQUEST") from None


def _variables(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise GraphQLRequestError(400, "variables must be a JSON object", "BAD_REQUEST")


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise GraphQLRequestError(413, "the request body is too large", "BAD_REQUEST")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise GraphQLRequestError(413, "the request body is too large", "BAD_REQUEST")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI app; `app.state.gateway` holds the handlers and their services."""
    settings = settings or Settings()
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await gateway.aclose()

    routes = [
        Route("/graphql", gateway.graphql, methods=["GET", "POST"]),
        Route("/healthz", gateway.healthz),
        Route("/readyz", gateway.readyz),
        Route("/metrics", gateway.metrics),
        Route("/files/{token}", gateway.download, methods=["GET"]),
        Route("/files/{token}", gateway.upload, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app
