"""Persisted documents: Automatic Persisted Queries and trusted documents.

PERSISTED_QUERIES=off   documents arrive as text; a persistedQuery extension is refused.
PERSISTED_QUERIES=apq   Apollo's APQ protocol: a request may carry only
                        `extensions.persistedQuery.sha256Hash`; an unknown hash answers
                        PERSISTED_QUERY_NOT_FOUND and the client resends hash + text, which
                        is kept in Redis (or in process) for later requests.
PERSISTED_QUERIES=only  trusted documents: nothing but the documents of the manifest
                        (PERSISTED_QUERIES_MANIFEST) runs, whatever text a client sends.

A document is identified by its sha256 digest, which also keys the response cache: a
request carrying only a hash can be answered from the response cache without its text.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from gateway.cache.base import CacheBackend
from gateway.cache.bounded import BoundedLRU
from gateway.errors import RequestRefused

__all__ = ["Document", "PersistedDocuments", "load_manifest", "sha256"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
APQ_TTL = 30 * 86_400
# APQ documents of this process kept at hand (they are also in Redis): bytes of text
KNOWN_BYTES = 16_000_000


class Document:
    __slots__ = ("digest", "persisted", "text")

    def __init__(self, digest: str, text: str | None, persisted: bool) -> None:
        self.digest = digest
        self.text = text
        self.persisted = persisted  # arrived with a persistedQuery extension


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load_manifest(path: Path) -> dict[str, str]:
    """{sha256: document} from Apollo's persisted-query manifest or a plain {hash: text} map."""
    data: Any = json.loads(path.read_text())
    if isinstance(data, dict) and isinstance(data.get("operations"), list):
        pairs = [(str(op["id"]), str(op["body"])) for op in data["operations"]]
    elif isinstance(data, dict):
        pairs = [(str(k), str(v)) for k, v in data.items()]
    else:
        raise ValueError(f"{path}: expected a persisted-query manifest")
    documents = {}
    for digest, body in pairs:
        if sha256(body) != digest:
            raise ValueError(f"{path}: id {digest[:12]}… is not the sha256 of its body")
        documents[digest] = body
    return documents


class PersistedDocuments:
    def __init__(
        self,
        mode: Literal["off", "apq", "only"],
        manifest: dict[str, str],
        backend: CacheBackend,
        prefix: str,
    ) -> None:
        self.mode = mode
        self.manifest = manifest
        self.backend = backend
        self.prefix = prefix
        self._known: BoundedLRU[str] = BoundedLRU(KNOWN_BYTES)  # recent APQ documents

    def identify(self, query: str, extensions: dict[str, Any] | None) -> Document:
        """The document a request names, checked against the mode; raises RequestRefused."""
        persisted = extensions.get("persistedQuery") if extensions else None
        if persisted is None:
            if not query.strip():
                raise RequestRefused(400, "the request must carry a 'query' string")
            digest = sha256(query)
            if self.mode == "only" and digest not in self.manifest:
                raise RequestRefused(
                    400,
                    "only registered documents are accepted (PERSISTED_QUERIES=only)",
                    "PERSISTED_QUERY_NOT_ALLOWED",
                )
            return Document(digest, query, persisted=False)
        if self.mode == "off":
            raise RequestRefused(
                400, "persisted queries are not enabled", "PERSISTED_QUERY_NOT_SUPPORTED"
            )
        given = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
        if not isinstance(given, str) or not _SHA256.match(given):
            raise RequestRefused(400, "persistedQuery.sha256Hash must be a sha256 hex digest")
        digest = given
        if query and sha256(query) != digest:
            raise RequestRefused(400, "provided sha does not match query")
        if self.mode == "only" and digest not in self.manifest:
            raise RequestRefused(
                400,
                "not a registered document (PERSISTED_QUERIES=only)",
                "PERSISTED_QUERY_NOT_FOUND",
            )
        return Document(digest, query or None, persisted=True)

    async def text(self, document: Document) -> str:
        """The document's text: sent along, from the manifest, or remembered (APQ)."""
        if document.text is not None:
            return document.text
        text = self.manifest.get(document.digest) or self._known.get(document.digest)
        if text is None:
            [stored] = await self.backend.get_many([self._key(document.digest)])
            text = stored.decode() if stored is not None else None
        if text is None:
            # Apollo's protocol: the client answers this by sending hash and text together
            raise RequestRefused(200, "PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND")
        self._remember_locally(document.digest, text)
        return text

    async def remember(self, document: Document, text: str) -> None:
        """Keep a valid APQ document that arrived with its text, for hash-only requests."""
        if not document.persisted or document.text is None or self.mode != "apq":
            return
        if document.digest in self._known or document.digest in self.manifest:
            return
        self._remember_locally(document.digest, text)
        await self.backend.set_many([(self._key(document.digest), text.encode(), APQ_TTL)], {})

    def _remember_locally(self, digest: str, text: str) -> None:
        self._known.put(digest, text, len(text))

    def _key(self, digest: str) -> str:
        return f"{self.prefix}apq:{digest}"
