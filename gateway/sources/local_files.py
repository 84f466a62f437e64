"""The sandbox file store: a local folder, with signed, time-limited links served by the gateway.

Layout: `{root}/{customer id}/{file name}`. A file id is the url-safe base64 of
`{customer id}/{file name}`; ownership is checked by the resolvers, and a name can never
hold a path separator, so an id cannot reach outside its customer's folder.
Downloads are `GET /files/{token}`, uploads `POST /files/{token}` (multipart, field `file`),
the token an HMAC-signed, expiring claim.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import json
import mimetypes
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.domain import FileQuery, Page, StoredFile, UploadForm
from gateway.errors import BadUserInput, IntegrationUnavailable
from gateway.sources.sandbox import paginate

__all__ = ["LocalFileStore", "SignedTokenError", "decode_file_id", "encode_file_id"]


class SignedTokenError(Exception):
    """A token that is forged, malformed or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_file_id(customer_id: str, name: str) -> str:
    return "f_" + _b64(f"{customer_id}/{name}".encode())


@functools.lru_cache(maxsize=4096)
def decode_file_id(file_id: str) -> tuple[str, str] | None:
    """(customer id, name), or None for anything that is not a well-formed id.

    Remembered: a page decodes each of its files' ids again for every download link
    (2% of a warm portal page's CPU without the response cache)."""
    if not file_id.startswith("f_"):
        return None
    try:
        customer_id, _, name = _unb64(file_id[2:]).decode().partition("/")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not customer_id or not safe_name(name) or not safe_name(customer_id):
        return None
    return customer_id, name


def safe_name(name: str) -> bool:
    return (
        bool(name)
        and "/" not in name
        and "\\" not in name
        and name not in (".", "..")
        and "\x00" not in name
        and len(name) <= 255
    )


class LocalFileStore:
    name = "sandbox-files"

    def __init__(
        self,
        root: Path,
        *,
        secret: str,
        base_url: str,
        max_upload_bytes: int,
        allowed_types: Sequence[str],
        max_ttl: int = 3600,
        latency_ms: float = 0.0,
        fail: bool = False,
    ) -> None:
        self.root = root
        self._key = hashlib.sha256(b"portal-gateway files|" + secret.encode()).digest()
        self.base_url = base_url.rstrip("/")
        self.max_upload_bytes = max_upload_bytes
        self.allowed_types = list(allowed_types)
        self.max_ttl = max_ttl
        self.latency = latency_ms / 1000
        self.fail = fail
        self.calls: Counter[str] = Counter()

    # -- signed tokens -----------------------------------------------------------------

    def sign(self, claims: dict[str, Any]) -> str:
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        mac = hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:20]
        return f"{body}.{_b64(mac)}"

    def verify(self, token: str, purpose: str) -> dict[str, Any]:
        body, _, mac = token.partition(".")
        expected = hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:20]
        try:
            valid = hmac.compare_digest(_unb64(mac), expected)
            claims = json.loads(_unb64(body)) if valid else None
        except (binascii.Error, ValueError):
            valid, claims = False, None
        if not valid or not isinstance(claims, dict) or claims.get("p") != purpose:
            raise SignedTokenError("invalid token")
        if float(claims.get("e", 0)) < time.time():
            raise SignedTokenError("expired token")
        return claims

    # -- the FileStore protocol --------------------------------------------------------

    async def _call(self, operation: str) -> None:
        self.calls[operation] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.fail:
            raise IntegrationUnavailable(self.name, f"{self.name} is unavailable (simulated)")

    def _stat(self, customer_id: str, name: str) -> StoredFile | None:
        path = self.root / customer_id / name
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return StoredFile(
            id=encode_file_id(customer_id, name),
            customer_id=customer_id,
            name=name,
            size=stat.st_size,
            content_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
            uploaded_at=datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    def _list(self, customer_id: str) -> list[StoredFile]:
        folder = self.root / customer_id
        if not safe_name(customer_id) or not folder.is_dir():
            return []
        found = [self._stat(customer_id, p.name) for p in folder.iterdir() if p.is_file()]
        files = [f for f in found if f is not None]
        files.sort(key=lambda f: (f.uploaded_at, f.name), reverse=True)
        return files

    async def file_pages(self, queries: Sequence[FileQuery]) -> list[Page[StoredFile] | Exception]:
        await self._call("file_pages")
        pages: list[Page[StoredFile] | Exception] = []
        for query in queries:
            pages.append(paginate(self._list(query.customer_id), query.first, query.after))
        return pages

    async def files(self, ids: Sequence[str]) -> list[StoredFile | Exception | None]:
        await self._call("files")
        out: list[StoredFile | Exception | None] = []
        for file_id in ids:
            decoded = decode_file_id(file_id)
            out.append(self._stat(*decoded) if decoded else None)
        return out

    def download_url(self, file: StoredFile, expires_in: int) -> str:
        ttl = min(max(expires_in, 1), self.max_ttl)
        token = self.sign({"p": "get", "f": file.id, "e": int(time.time()) + ttl})
        return f"{self.base_url}/files/{token}"

    async def request_upload(
        self, customer_id: str, name: str, content_type: str, size: int
    ) -> UploadForm:
        await self._call("request_upload")
        if not safe_name(name):
            raise BadUserInput("a file name may not contain path separators", field="name")
        expires = int(time.time()) + 900
        file_id = encode_file_id(customer_id, name)
        token = self.sign({"p": "put", "f": file_id, "t": content_type, "s": size, "e": expires})
        return UploadForm(
            url=f"{self.base_url}/files/{token}",
            fields={"Content-Type": content_type, "key": name},
            file_id=file_id,
            expires_at=datetime.fromtimestamp(expires, UTC),
        )

    async def delete(self, file: StoredFile) -> None:
        await self._call("delete")
        decoded = decode_file_id(file.id)
        if decoded:
            (self.root / decoded[0] / decoded[1]).unlink(missing_ok=True)

    async def aclose(self) -> None:
        return None

    # -- the gateway's /files/{token} endpoint ------------------------------------------

    def open_download(self, token: str) -> tuple[Path, StoredFile]:
        """The path and metadata a valid download token grants; raises SignedTokenError."""
        claims = self.verify(token, "get")
        decoded = decode_file_id(str(claims.get("f", "")))
        stored = self._stat(*decoded) if decoded else None
        if decoded is None or stored is None:
            raise SignedTokenError("no such file")
        return self.root / decoded[0] / decoded[1], stored

    def accept_upload(self, token: str, content_type: str, body: bytes) -> StoredFile:
        """Store an upload that a valid upload token allows; the token's policy is enforced."""
        claims = self.verify(token, "put")
        if len(body) > min(int(claims["s"]), self.max_upload_bytes):
            raise BadUserInput("the file is larger than declared or allowed", field="file")
        if content_type != claims["t"]:
            raise BadUserInput(
                "the file's content type differs from the declared one", field="file"
            )
        decoded = decode_file_id(str(claims["f"]))
        if decoded is None:
            raise SignedTokenError("invalid token")
        folder = self.root / decoded[0]
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{decoded[1]}.{secrets.token_hex(4)}.part"
        tmp.write_bytes(body)
        tmp.replace(folder / decoded[1])
        stored = self._stat(*decoded)
        assert stored is not None
        return stored

    def seed(self, files: dict[str, list[tuple[str, str, bytes]]]) -> None:
        """Write demo files that are not there yet (never overwrites)."""
        for customer_id, entries in files.items():
            folder = self.root / customer_id
            folder.mkdir(parents=True, exist_ok=True)
            for name, _type, body in entries:
                path = folder / name
                if not path.exists():
                    path.write_bytes(body)
