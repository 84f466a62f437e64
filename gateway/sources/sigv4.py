"""S3 requests signed with SigV4 without boto3's per-call machinery.

Two uses on the portal's hot path:

- presigned GETs (query-string auth): `generate_presigned_url` costs ~160 µs a link
  (endpoint rules, parameter validation and event hooks run for every call) and a portal
  page shows ten or more links; this signer does only the signature (~15 µs);
- the folder listing (`ListObjectsV2`, header auth), sent by the gateway's own async HTTP
  client: boto3 blocks, so each call ran in a worker thread, and its ~2.5 ms of CPU there
  held the GIL while the event loop was sending the page's other provider calls (DESIGN
  section 12 and the closing note of issue 9 have the measurements).

The URL base (endpoint, addressing style, bucket) is taken once from boto3 itself, the
credentials from the boto3 session that made the client (`Session.get_credentials()`, the
object the client signs with), frozen afresh for each signature as botocore advises, so
temporary credentials still rotate; the algorithms are AWS's "Authenticating Requests: Using Query
Parameters" and "Using the Authorization Header" (AWS Signature Version 4).
tests/sources/test_s3_files.py checks the URLs equal boto3's byte for byte, and that a
server recomputing the header signature with botocore from what it received agrees.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from boto3.session import Session

__all__ = ["BucketSigner", "Credentials"]

_ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_PROBE_KEY = "p"


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None


@functools.lru_cache(maxsize=4096)
def _encode(value: str) -> str:
    """SigV4's URI encoding: everything but unreserved characters, UTF-8. Remembered: a
    page signs the same names, scopes and dispositions again and again (urllib's quote was
    5% of a warm portal page's CPU without the response cache)."""
    return quote(value, safe="-_.~")


class BucketSigner:
    """Signed requests for one bucket: presigned object GETs, header-signed bucket GETs."""

    def __init__(
        self,
        base_url: str,
        region: str,
        credentials: Callable[[], Credentials],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`base_url` ends with "/" and is followed by the quoted key (see `from_client`)."""
        parts = urlsplit(base_url)
        self.base_url = base_url
        self.host = parts.netloc
        self.base_path = parts.path
        self.region = region
        self.credentials = credentials
        self.now = now
        self._keys: dict[tuple[str, str], bytes] = {}  # (secret, date) -> signing key
        # the second last signed in, and its stamp and scope
        self._second: datetime | None = None
        self._stamp = ("", "")

    @classmethod
    def from_client(cls, client: Any, bucket: str, session: Session) -> BucketSigner:
        """For a boto3 S3 client made by `session`: the client's endpoint, addressing style
        and region, and the session's credentials (the object the client signs with)."""
        probe: str = client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": _PROBE_KEY}, ExpiresIn=60
        )
        base_url = probe.partition("?")[0][: -len(_PROBE_KEY)]
        # botocore resolves them once per session and refreshes refreshable ones behind
        # this object; get_frozen_credentials() gives one consistent key, secret and token
        provider = session.get_credentials()

        def credentials() -> Credentials:
            if provider is None:
                raise RuntimeError("no AWS credentials found for S3")
            frozen = provider.get_frozen_credentials()
            if not frozen.access_key or not frozen.secret_key:
                raise RuntimeError("no AWS credentials found for S3")
            return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

        return cls(base_url, client.meta.region_name, credentials)

    def _signing_key(self, secret: str, date: str) -> bytes:
        cached = self._keys.get((secret, date))
        if cached is None:
            key = f"AWS4{secret}".encode()
            for part in (date, self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {(secret, date): key}  # one day's key; yesterday's is dropped
            cached = key
        return cached

    def _moment(self) -> tuple[str, str]:
        """The request's time stamp and its credential scope (date/region/s3/aws4_request).

        Formatted once a second: strftime was 3% of a warm portal page's CPU without the
        response cache (ten links a page, each signed at the same second)."""
        second = self.now().replace(microsecond=0)
        if second != self._second:
            stamp = second.strftime("%Y%m%dT%H%M%SZ")
            self._stamp = (stamp, f"{stamp[:8]}/{self.region}/s3/aws4_request")
            self._second = second
        return self._stamp

    def _signature(self, secret: str, stamp: str, scope: str, canonical_request: str) -> str:
        """SigV4's signature of a canonical request made at `stamp`."""
        string_to_sign = "\n".join(
            (_ALGORITHM, stamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
        )
        return hmac.new(
            self._signing_key(secret, stamp[:8]), string_to_sign.encode(), hashlib.sha256
        ).hexdigest()

    def get_url(self, key: str, expires_in: int, query: dict[str, str] | None = None) -> str:
        """A URL that GETs `key` for `expires_in` seconds from now; `query` is signed too
        (e.g. response-content-disposition)."""
        credentials = self.credentials()
        stamp, scope = self._moment()
        given = [(_encode(name), _encode(value)) for name, value in (query or {}).items()]
        auth = [
            ("X-Amz-Algorithm", _ALGORITHM),
            ("X-Amz-Credential", _encode(f"{credentials.access_key}/{scope}")),
            ("X-Amz-Date", stamp),
            ("X-Amz-Expires", str(expires_in)),
            ("X-Amz-SignedHeaders", "host"),
        ]
        if credentials.token:
            auth.append(("X-Amz-Security-Token", _encode(credentials.token)))
        path = quote(key, safe="/~")
        canonical_query = "&".join(f"{n}={v}" for n, v in sorted(given + auth))
        canonical_request = "\n".join(
            (
                "GET",
                self.base_path + path,
                canonical_query,
                f"host:{self.host}\n",
                "host",
                "UNSIGNED-PAYLOAD",
            )
        )
        signature = self._signature(credentials.secret_key, stamp, scope, canonical_request)
        query_string = "&".join(f"{n}={v}" for n, v in [*given, *auth])
        return f"{self.base_url}{path}?{query_string}&X-Amz-Signature={signature}"

    @property
    def bucket_path(self) -> str:
        """The path of the bucket itself ("/bucket" path-style, "/" virtual-hosted)."""
        return self.base_path.rstrip("/") or "/"

    def bucket_get(self, query: dict[str, str]) -> tuple[str, dict[str, str]]:
        """URL and headers of a GET on the bucket (ListObjectsV2, say) with `query`, signed
        in the Authorization header; the query is encoded here, once, as it is signed."""
        credentials = self.credentials()
        stamp, scope = self._moment()
        path = self.bucket_path
        canonical_query = "&".join(
            f"{n}={v}" for n, v in sorted((_encode(n), _encode(v)) for n, v in query.items())
        )
        headers = {
            "host": self.host,
            "x-amz-content-sha256": EMPTY_SHA256,
            "x-amz-date": stamp,
        }
        if credentials.token:
            headers["x-amz-security-token"] = credentials.token
        signed = ";".join(sorted(headers))
        canonical_request = "\n".join(
            (
                "GET",
                path,
                canonical_query,
                "".join(f"{name}:{headers[name].strip()}\n" for name in sorted(headers)),
                signed,
                EMPTY_SHA256,
            )
        )
        signature = self._signature(credentials.secret_key, stamp, scope, canonical_request)
        headers["authorization"] = (
            f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        del headers["host"]  # the HTTP client sends it, from the URL
        origin = self.base_url[: len(self.base_url) - len(self.base_path)]
        return f"{origin}{path}?{canonical_query}", headers
