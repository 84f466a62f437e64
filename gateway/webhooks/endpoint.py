"""`POST /webhooks/{provider}`: body limit, signature, parse, intake, metrics, answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.observability import WEBHOOKS
from gateway.webhooks.intake import Intake
from gateway.webhooks.provider import BadPayload, Incoming, InvalidSignature, WebhookProvider

__all__ = ["MAX_WEBHOOK_BYTES", "WebhookEndpoint"]

log = logging.getLogger(__name__)

# Far above any provider's event (Stripe's largest are tens of KB), far below harm.
MAX_WEBHOOK_BYTES = 1_048_576


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class WebhookEndpoint:
    def __init__(
        self,
        providers: Mapping[str, WebhookProvider],
        intake: Intake,
        public_base_url: str | None = None,
        max_bytes: int = MAX_WEBHOOK_BYTES,
    ) -> None:
        self.providers = dict(providers)
        self.intake = intake
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.max_bytes = max_bytes

    def _url(self, request: Request) -> str:
        if self.public_base_url is None:
            return str(request.url)
        query = request.url.query
        return self.public_base_url + request.url.path + (f"?{query}" if query else "")

    async def handle(self, request: Request) -> Response:
        provider = self.providers.get(request.path_params["provider"])
        if provider is None:
            # unknown, or its secret is unset: never accept what cannot be verified
            return Response("no such webhook", status_code=404)
        outcome, response = await self._handle(provider, request)
        WEBHOOKS.labels(provider.name, outcome).inc()
        return response

    async def _handle(self, provider: WebhookProvider, request: Request) -> tuple[str, Response]:
        def answer(status: int, message: str | None = None) -> Response:
            if message is None or provider.quiet:
                return Response(status_code=status)
            return Response(
                orjson.dumps({"error": message}), status_code=status, media_type="application/json"
            )

        try:
            body = await _read_body(request, self.max_bytes)
        except _TooLarge:
            return "bad_request", answer(413, f"the body is larger than {self.max_bytes} bytes")
        incoming = Incoming(
            method=request.method,
            url=self._url(request),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            now=time.time(),
        )
        try:
            provider.verify(incoming)
        except InvalidSignature as error:
            log.info("webhook refused", extra={"provider": provider.name, "reason": str(error)})
            return "invalid_signature", answer(provider.reject_status, "invalid signature")
        try:
            events = provider.parse(body)
        except BadPayload as error:
            log.info("webhook refused", extra={"provider": provider.name, "reason": str(error)})
            return "bad_request", answer(400, str(error))
        except Exception:
            # A reader let through what it should have refused. Parsing reads the body
            # alone, so a retry would fail the same way: no 500, which asks for retries;
            # logged in full, as the reader is what needs fixing.
            log.exception("webhook payload not understood", extra={"provider": provider.name})
            return "bad_request", answer(400, "the payload is not understood")
        try:
            handled, _duplicates = await self.intake.take(events)
        except Exception:
            log.exception("webhook handling failed", extra={"provider": provider.name})
            return "error", answer(500, "not handled; retry later")
        if events and not handled:
            return "duplicate", answer(200)
        return "accepted", answer(200)
