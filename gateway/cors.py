"""CORS for /graphql and /api: only the origins of CORS_ORIGINS get access headers."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["Cors"]

_ALLOW_HEADERS = (
    b"authorization, content-type, x-api-key, x-request-id, apollo-require-preflight, "
    b"x-apollo-operation-name, cache-control, if-none-match, idempotency-key"
)


class Cors:
    def __init__(self, origins: Sequence[str], methods: bytes = b"GET, POST, OPTIONS") -> None:
        self.methods = methods
        self.any = "*" in origins
        self.origins = {o.rstrip("/").encode() for o in origins if o != "*"}

    def headers(self, origin: bytes | None, method: str) -> list[tuple[bytes, bytes]]:
        """The CORS headers for a request from `origin`; none for an origin not allowed."""
        if origin is None or not (self.any or origin in self.origins):
            return []
        headers = [
            (b"access-control-allow-origin", b"*" if self.any else origin),
            (b"vary", b"Origin"),
            (b"access-control-expose-headers", b"etag, x-request-id, retry-after, link, location"),
        ]
        if method == "OPTIONS":
            headers += [
                (b"access-control-allow-methods", self.methods),
                (b"access-control-allow-headers", _ALLOW_HEADERS),
                (b"access-control-max-age", b"600"),
            ]
        return headers
