"""The S3 file store (FILES_SOURCE=s3), on boto3 with signature v4.

Layout: a customer's files are the objects `{S3_PREFIX}{customer id}/{file name}`. A file
id is the url-safe base64 of `{customer id}/{file name}` (the sandbox store's scheme), and
decoding accepts exactly one separator and two plain names (no `..`, no slashes, no NUL),
so no id names a key outside its customer's folder; the resolvers check that the customer
is the viewer. Downloads are presigned GETs, uploads presigned POSTs whose policy fixes the
key, the exact Content-Type and the size range: S3 itself refuses anything else.

The folder listing, the one call of a portal page, goes through the gateway's own
`UpstreamClient` (async, with its deadline, retries, circuit breaker and rate limit), signed
by `sigv4.BucketSigner` with the credentials of the boto3 session. boto3 blocks, so the other
calls (HeadObject, DeleteObject, presigned POSTs) run in a worker thread
(`asyncio.to_thread`), under the same circuit breaker and counted in the same upstream
metrics, with botocore's standard retry mode configured from the same settings:
`RETRY_MAX_ATTEMPTS` attempts in all, `UPSTREAM_TIMEOUT` per attempt.

Upload completion is known from S3 itself: the bucket sends `s3:ObjectCreated:*` event
notifications to an SQS queue, and `S3UploadNotifications` turns each into a `FileUploaded`
event (see docs/design.md, "Upload completion").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import mimetypes
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote_plus
from xml.etree import ElementTree

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as parse_xml

from gateway.domain import DomainEvent, FileQuery, FileUploaded, Page, StoredFile, UploadForm
from gateway.errors import BadUserInput, IntegrationUnavailable
from gateway.observability import UPSTREAM_REQUESTS, UPSTREAM_SECONDS, count_upstream_call
from gateway.settings import Settings
from gateway.sources.fanout import each
from gateway.sources.local_files import decode_file_id, encode_file_id, safe_name
from gateway.sources.sigv4 import BucketSigner
from gateway.upstream import POOL_SIZE, BreakerState, UpstreamClient

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from gateway.redis_client import RedisClient

__all__ = [
    "CONCURRENCY",
    "SOURCE",
    "UPLOAD_FORM_TTL",
    "S3FileStore",
    "S3UploadNotifications",
    "s3_client",
]

log = logging.getLogger(__name__)

SOURCE = "s3"
CONCURRENCY = 8  # S3 calls in flight for one batch (many customers' folders, many ids)
# How long a presigned upload form stays valid: time to pick a file and send 25 MB.
UPLOAD_FORM_TTL = 900
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_CREDENTIAL_CODES = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)

T = TypeVar("T")


class _Missing(Exception):
    """S3 answered 404 for the object."""


def s3_client(settings: Settings, session: boto3.session.Session | None = None) -> S3Client:
    """A boto3 S3 client for the settings: SigV4, the region, the endpoint, one retry policy;
    made by `session` (its credentials), else by a new default session."""
    config = Config(
        signature_version="s3v4",
        region_name=settings.aws_region,
        # an S3-compatible endpoint (MinIO, moto, a VPC endpoint) rarely has per-bucket DNS
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "virtual"},
        retries={"mode": "standard", "total_max_attempts": settings.retry_max_attempts},
        connect_timeout=settings.upstream_timeout,
        read_timeout=settings.upstream_timeout,
        max_pool_connections=POOL_SIZE,
    )
    client: S3Client = (session or boto3.session.Session()).client(
        "s3",
        region_name=settings.aws_region,
        endpoint_url=settings.s3_endpoint_url,
        config=config,
    )
    return client


class S3FileStore:
    """FileStore over one S3 bucket."""

    name = SOURCE

    def __init__(
        self,
        settings: Settings,
        *,
        session: boto3.session.Session | None = None,
        redis: RedisClient | None = None,
    ) -> None:
        """`session` gives the AWS credentials (default: boto3's usual chain); `redis`
        shares the rate limit of the listing with the other replicas."""
        if not settings.s3_bucket:
            raise ValueError("FILES_SOURCE=s3 needs S3_BUCKET")
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.max_upload_bytes = settings.files_max_upload_bytes
        self.allowed_types = frozenset(settings.files_allowed_types)
        self.max_ttl = settings.files_url_max_ttl
        self.upload_ttl = min(UPLOAD_FORM_TTL, settings.files_url_max_ttl)
        # absolute URLs: the bucket's base comes from boto3 (see _bucket)
        self._upstream = UpstreamClient(SOURCE, base_url="", settings=settings, redis=redis)
        self.breaker = self._upstream.breaker  # one breaker for boto3's calls and the listing
        # the boto3 calls and the gateway's own signatures use this session's credentials
        self._session = session or boto3.session.Session()
        self._client = s3_client(settings, self._session)
        self._signer: BucketSigner | None = None

    @property
    def breaker_state(self) -> BreakerState:
        return self.breaker.state

    async def aclose(self) -> None:
        try:
            await self._upstream.aclose()
        finally:
            await asyncio.to_thread(self._client.close)

    # -- keys and ids ---------------------------------------------------------------------

    def folder(self, customer_id: str) -> str:
        """The key prefix of one customer's files."""
        return f"{self.prefix}{customer_id}/"

    def key_of(self, file_id: str) -> tuple[str, str, str] | None:
        """(customer id, file name, S3 key) of a well-formed file id, else None."""
        decoded = decode_file_id(file_id)
        if decoded is None:
            return None
        customer_id, name = decoded
        return customer_id, name, self.folder(customer_id) + name

    def split_key(self, key: str) -> tuple[str, str] | None:
        """(customer id, file name) of a key in a customer's folder, else None."""
        if not key.startswith(self.prefix):
            return None
        customer_id, separator, name = key[len(self.prefix) :].partition("/")
        if not separator or not safe_name(customer_id) or not safe_name(name):
            return None
        return customer_id, name

    # -- FileStore ---------------------------------------------------------------------------

    async def file_pages(self, queries: Sequence[FileQuery]) -> list[Page[StoredFile] | Exception]:
        """One `ListObjectsV2` per customer folder, CONCURRENCY at a time."""
        return await each(queries, self._page, CONCURRENCY)

    async def files(self, ids: Sequence[str]) -> list[StoredFile | Exception | None]:
        """One `HeadObject` per id; ids that do not decode cost no call."""
        return await each(ids, self._head, CONCURRENCY)

    def download_url(self, file: StoredFile, expires_in: int) -> str:
        """A presigned GET, valid `expires_in` seconds (at most FILES_URL_MAX_TTL); no call."""
        located = self.key_of(file.id)
        if located is None or located[0] != file.customer_id:
            raise ValueError("not a file of this store")
        _customer, name, key = located
        ttl = min(max(expires_in, 1), self.max_ttl)
        return self._bucket().get_url(key, ttl, {"response-content-disposition": _attachment(name)})

    async def request_upload(
        self, customer_id: str, name: str, content_type: str, size: int
    ) -> UploadForm:
        """A presigned POST for exactly this key, this Content-Type and 1..size bytes."""
        # The resolver has checked all of this; the store refuses on its own too, since the
        # policy it signs is what S3 will enforce.
        if not safe_name(customer_id) or not safe_name(name):
            raise BadUserInput("name must be a plain file name without path separators", "name")
        if content_type not in self.allowed_types:
            raise BadUserInput(f"content type {content_type!r} is not allowed", "contentType")
        if not 1 <= size <= self.max_upload_bytes:
            raise BadUserInput(f"size must be between 1 and {self.max_upload_bytes} bytes", "size")
        key = self.folder(customer_id) + name
        expires_at = datetime.now(UTC) + timedelta(seconds=self.upload_ttl)
        post = await self._run(
            "generate_presigned_post",
            partial(
                self._client.generate_presigned_post,
                Bucket=self.bucket,
                Key=key,
                Fields={"Content-Type": content_type},
                Conditions=[
                    {"Content-Type": content_type},
                    ["content-length-range", 1, size],
                ],
                ExpiresIn=self.upload_ttl,
            ),
            remote=False,
        )
        return UploadForm(
            url=str(post["url"]),
            fields={str(k): str(v) for k, v in post["fields"].items()},
            file_id=encode_file_id(customer_id, name),
            expires_at=expires_at,
        )

    async def delete(self, file: StoredFile) -> None:
        located = self.key_of(file.id)
        if located is None or located[0] != file.customer_id:
            return
        await self._run(
            "delete_object", partial(self._client.delete_object, Bucket=self.bucket, Key=located[2])
        )

    # -- one call each ---------------------------------------------------------------------

    async def _page(self, query: FileQuery) -> Page[StoredFile]:
        customer_id = query.customer_id
        folder = self.folder(customer_id)
        start_after: str | None = None
        if query.after is not None:
            decoded = decode_file_id(query.after)
            if decoded is None or decoded[0] != customer_id:
                raise BadUserInput("after must be a cursor from a previous page", field="after")
            start_after = folder + decoded[1]
        if not safe_name(customer_id):
            return Page(items=[], next_cursor=None, total_count=0)
        if query.first <= 0:
            return Page(items=[], next_cursor=None, total_count=None)
        # Delimiter: objects in sub-folders are not the customer's files; S3 answers keys
        # in name order, and max-keys = first makes one call per page. encoding-type=url
        # (as boto3 asks): any key survives the XML.
        listing = {
            "list-type": "2",
            "prefix": folder,
            "delimiter": "/",
            "max-keys": str(min(query.first, 1000)),
            "encoding-type": "url",
        }
        if start_after is not None:
            listing["start-after"] = start_after
        objects, truncated = await self._list(listing)
        items: list[StoredFile] = []
        for key, size, modified in objects:
            name = key[len(folder) :] if key.startswith(folder) else ""
            if not safe_name(name):
                continue
            items.append(
                StoredFile(
                    id=encode_file_id(customer_id, name),
                    customer_id=customer_id,
                    name=name,
                    size=size,
                    uploaded_at=modified,
                    content_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
                )
            )
        more = truncated and bool(items)
        return Page(
            items=items,
            next_cursor=items[-1].id if more else None,
            total_count=len(items) if start_after is None and not more else None,
            cursors=[item.id for item in items],
        )

    async def _head(self, file_id: str) -> StoredFile | None:
        located = self.key_of(file_id)
        if located is None:
            return None
        customer_id, name, key = located
        try:
            head = await self._run(
                "head_object", partial(self._client.head_object, Bucket=self.bucket, Key=key)
            )
        except _Missing:
            return None
        return StoredFile(
            id=encode_file_id(customer_id, name),
            customer_id=customer_id,
            name=name,
            size=int(head.get("ContentLength", 0)),
            uploaded_at=_aware(head.get("LastModified")),
            content_type=head.get("ContentType") or None,
        )

    async def stored_file(self, key: str) -> StoredFile | None:
        """The file at `key` as S3 has it now (None: not a customer's file, or gone)."""
        split = self.split_key(key)
        if split is None:
            return None
        return await self._head(encode_file_id(*split))

    # -- calls under the breaker --------------------------------------------------------------

    def _bucket(self) -> BucketSigner:
        if self._signer is None:  # here, not at start: boto3 wants credentials to probe
            self._signer = BucketSigner.from_client(self._client, self.bucket, self._session)
        return self._signer

    async def _list(self, query: dict[str, str]) -> tuple[list[_Object], bool]:
        """One ListObjectsV2 of the bucket: (key, size, last modified) each, and whether
        S3 has more. Raises IntegrationUnavailable as the boto3 calls do."""
        operation = "list_objects_v2"
        try:
            url, headers = self._bucket().bucket_get(query)
        except (NoCredentialsError, PartialCredentialsError, RuntimeError):
            log.error("s3 %s: no AWS credentials found", operation)
            raise IntegrationUnavailable(
                SOURCE, "s3 is not configured with credentials", retryable=False
            ) from None
        response = await self._upstream.request("GET", url, operation=operation, headers=headers)
        try:
            root = parse_xml(response.content)  # no DTD, no entity expansion
        except (ElementTree.ParseError, DefusedXmlException):
            root = None
        if response.status_code != 200:
            code = _text(root, "Code") if root is not None else ""
            raise _error_of(operation, code or str(response.status_code), response.status_code)
        if root is None or _local(root.tag) != "ListBucketResult":
            log.warning(
                "s3 %s: the answer is not a listing",
                operation,
                extra={"provider": SOURCE, "operation": operation},
            )
            raise IntegrationUnavailable(SOURCE, "s3 answered something that is not a listing")
        url_encoded = _text(root, "EncodingType") == "url"
        objects: list[_Object] = []
        for element in root:
            if _local(element.tag) != "Contents":
                continue
            key = _text(element, "Key")
            try:
                size = int(_text(element, "Size") or 0)
                modified = _aware(datetime.fromisoformat(_text(element, "LastModified")))
            except ValueError:
                size, modified = 0, _aware(None)
            objects.append((unquote_plus(key) if url_encoded else key, size, modified))
        return objects, _text(root, "IsTruncated") == "true"

    async def _run(self, operation: str, call: Callable[[], T], *, remote: bool = True) -> T:
        """`call()` in a worker thread, under the breaker, counted; S3 errors mapped.

        Raises _Missing for a 404, IntegrationUnavailable for the rest. `remote=False` is
        for local work that may still need credentials (presigning): no breaker, no count.
        """
        try:
            probe = self.breaker.acquire() if remote else False
        except IntegrationUnavailable:
            UPSTREAM_REQUESTS.labels(SOURCE, operation, "breaker_open").inc()
            raise
        if remote:
            count_upstream_call()  # the request's provider calls (access log, benchmark)
        started = time.monotonic()
        outcome = "ok"
        try:
            result = await asyncio.to_thread(call)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if status >= 500:
                outcome = "server_error"
                if remote:
                    self.breaker.record_failure(probe)
            else:
                outcome = "client_error"
                if remote:
                    self.breaker.record_success(probe)
            raise _error_of(operation, code, status) from None
        except (NoCredentialsError, PartialCredentialsError):
            outcome = "client_error"
            if remote:
                self.breaker.release(probe)
            log.error("s3 %s: no AWS credentials found", operation)
            raise IntegrationUnavailable(
                SOURCE, "s3 is not configured with credentials", retryable=False
            ) from None
        except BotoCoreError as exc:
            timed_out = isinstance(exc, ConnectTimeoutError | ReadTimeoutError)
            outcome = "timeout" if timed_out else "connection_error"
            if remote:
                self.breaker.record_failure(probe)
            log.warning(
                "s3 %s failed: %s",
                operation,
                type(exc).__name__,
                extra={"provider": SOURCE, "operation": operation, "outcome": outcome},
            )
            raise IntegrationUnavailable(
                SOURCE, "s3 timed out" if timed_out else "s3 could not be reached"
            ) from None
        except BaseException:
            # cancelled while the thread runs on: the call's outcome is never known
            if remote:
                self.breaker.release(probe)
            outcome = "cancelled"
            raise
        else:
            if remote:
                self.breaker.record_success(probe)
            return result
        finally:
            if remote:
                UPSTREAM_REQUESTS.labels(SOURCE, operation, outcome).inc()
                UPSTREAM_SECONDS.labels(SOURCE, operation).observe(time.monotonic() - started)


def _error_of(operation: str, code: str, status: int) -> Exception:
    """The exception for an S3 error answer."""
    if status == 404 and code in _MISSING_CODES:
        return _Missing()
    extra = {"provider": SOURCE, "operation": operation, "status": status, "s3_code": code}
    if status >= 500 or code == "SlowDown":
        log.warning("s3 %s failed: HTTP %s %s", operation, status, code, extra=extra)
        return IntegrationUnavailable(SOURCE, f"s3 is unavailable (HTTP {status})")
    # A refusal is a configuration problem (credentials, bucket policy, missing bucket):
    # no retry will fix it.
    log.error("s3 %s refused: HTTP %s %s", operation, status, code, extra=extra)
    message = (
        "s3 refused the gateway's credentials"
        if code in _CREDENTIAL_CODES
        else "s3 refused the gateway's request"
    )
    return IntegrationUnavailable(SOURCE, message, retryable=False)


# A listed object: key, size, last modified.
_Object = tuple[str, int, datetime]


def _local(tag: str) -> str:
    """An XML tag without its namespace (S3 answers in its 2006-03-01 namespace)."""
    return tag.rpartition("}")[2]


def _text(element: ElementTree.Element, child: str) -> str:
    """The text of `element`'s first child named `child` (any namespace), else ""."""
    for node in element:
        if _local(node.tag) == child:
            return node.text or ""
    return ""


@functools.lru_cache(maxsize=4096)
def _attachment(name: str) -> str:
    """Content-Disposition that saves the file under its name (RFC 6266, RFC 5987);
    remembered, as every page signs its files' names again."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _aware(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.now(UTC)


# -- upload completion: S3 event notifications through SQS -----------------------------------


class S3UploadNotifications:
    """Finished uploads, from the bucket's `s3:ObjectCreated:*` notifications on SQS.

    `run(handle, stop)` long-polls the queue and hands each batch of `FileUploaded` events
    to `handle` (the webhook intake: dedupe by event id, drop the customer's cached file
    lists, publish). A message is deleted only after `handle` returned, so a failure leaves
    it for redelivery when its visibility timeout ends: at least once, and the event id
    (derived from the object's version in S3) makes a redelivery a duplicate.
    """

    def __init__(
        self,
        store: S3FileStore,
        queue_url: str,
        *,
        sqs: Any = None,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        wait_seconds: int = 10,
    ) -> None:
        """`sqs` replaces the boto3 SQS client built from `region` and `endpoint_url`."""
        self.store = store
        self.queue_url = queue_url
        self.wait_seconds = max(0, min(wait_seconds, 20))  # SQS long polls up to 20 s
        self._sqs: Any = sqs or boto3.session.Session().client(
            "sqs",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(retries={"mode": "standard"}, read_timeout=self.wait_seconds + 10),
        )

    async def run(
        self, handle: Callable[[Sequence[DomainEvent]], Awaitable[object]], stop: asyncio.Event
    ) -> None:
        """Poll until `stop` is set; a failing poll is logged and retried after a pause."""
        while not stop.is_set():
            try:
                await self.poll_once(handle)
            except Exception:
                log.exception("s3 upload notifications: poll failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=5)

    async def poll_once(self, handle: Callable[[Sequence[DomainEvent]], Awaitable[object]]) -> int:
        """One receive: the batch's events go to `handle`; answers how many there were."""
        answer = await asyncio.to_thread(
            self._sqs.receive_message,
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.wait_seconds,
        )
        messages: list[Mapping[str, Any]] = answer.get("Messages", [])
        if not messages:
            return 0
        events: list[FileUploaded] = []
        for message in messages:
            events.extend(await self.events_of(str(message.get("Body", ""))))
        if events:
            await handle(events)
        await asyncio.to_thread(
            self._sqs.delete_message_batch,
            QueueUrl=self.queue_url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                for index, message in enumerate(messages)
            ],
        )
        return len(events)

    async def events_of(self, body: str) -> list[FileUploaded]:
        """The FileUploaded events of one notification body (S3's own, or wrapped by SNS).

        Anything else (S3's test event, other buckets, keys outside a customer's folder,
        objects deleted since) yields nothing.
        """
        try:
            payload = json.loads(body)
            if isinstance(payload, dict) and payload.get("Type") == "Notification":
                payload = json.loads(payload.get("Message", ""))
        except (TypeError, ValueError):
            log.warning("s3 upload notifications: a message that is not JSON was dropped")
            return []
        records = payload.get("Records") if isinstance(payload, dict) else None
        events: list[FileUploaded] = []
        for record in records if isinstance(records, list) else []:
            event = await self._event_of(record)
            if event is not None:
                events.append(event)
        return events

    async def _event_of(self, record: Any) -> FileUploaded | None:
        if not isinstance(record, dict):
            return None
        s3 = record.get("s3")
        if not str(record.get("eventName", "")).startswith("ObjectCreated:") or not isinstance(
            s3, dict
        ):
            return None
        bucket = (s3.get("bucket") or {}).get("name")
        obj = s3.get("object") or {}
        key = unquote_plus(str(obj.get("key", "")))  # notification keys are form-encoded
        if bucket != self.store.bucket or self.store.split_key(key) is None:
            return None
        stored = await self.store.stored_file(key)
        if stored is None:  # deleted again before we looked
            return None
        version = obj.get("sequencer") or f"{obj.get('eTag')}:{record.get('eventTime')}"
        digest = hashlib.sha256(f"{bucket}\0{key}\0{version}".encode()).hexdigest()[:32]
        log.info(
            "file uploaded",
            extra={"customer_id": stored.customer_id, "file_id": stored.id, "size": stored.size},
        )
        return FileUploaded(
            event_id=f"s3:{digest}",
            customer_id=stored.customer_id,
            occurred_at=_event_time(record.get("eventTime")) or stored.uploaded_at,
            file=stored,
        )


def _event_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
