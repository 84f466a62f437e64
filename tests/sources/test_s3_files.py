"""The S3 file store against moto's S3 server over HTTP, and the portal on Stripe + S3.

moto enforces neither signatures, expiry nor POST policies, so what S3 would enforce is
asserted on what the gateway signs: `X-Amz-Expires` and the key of each presigned GET,
and the decoded policy of each presigned POST (evaluated by `policy_allows`, which applies
S3's POST-policy rules to a form and a file size).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlsplit

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from prometheus_client import REGISTRY

from gateway.domain import FileQuery, StoredFile
from gateway.errors import BadUserInput, IntegrationUnavailable
from gateway.settings import Settings
from gateway.sources.local_files import encode_file_id
from gateway.sources.s3 import S3FileStore, S3UploadNotifications, _attachment, s3_client
from gateway.webhooks.intake import Intake
from tests.conftest import GatewayServer, running_gateway
from tests.fakes.stripe import FakeStripe, running_fake_stripe
from tests.servers import free_port, serve
from tests.sources.billing_behaviour import link_customer

REGION = "us-east-1"
STRIPE_KEY = "sk_test_portal"
PDF = "application/pdf"


# -- moto ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's server (S3 and SQS) on a free port, with credentials boto3 finds."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "AKIAMOTOTESTKEY",
            "AWS_SECRET_ACCESS_KEY": "moto-secret",
            "AWS_DEFAULT_REGION": REGION,
        }.items():
            env.setenv(name, value)
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


@pytest.fixture
def bucket(moto_url: str) -> str:
    name = f"docs-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_url, region_name=REGION).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3(moto_url: str) -> Any:
    """A plain boto3 client, to look at the bucket the way an operator would."""
    return boto3.client("s3", endpoint_url=moto_url, region_name=REGION)


def s3_settings(moto_url: str, bucket: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "files_source": "s3",
        "s3_bucket": bucket,
        "s3_endpoint_url": moto_url,
        "aws_region": REGION,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def store(moto_url: str, bucket: str) -> Any:
    made = S3FileStore(s3_settings(moto_url, bucket))
    yield made
    await made.aclose()


def put(s3: Any, bucket: str, key: str, body: bytes, content_type: str = PDF) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


def policy_of(fields: dict[str, str]) -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(base64.b64decode(fields["policy"]))
    return policy


def policy_allows(policy: dict[str, Any], form: dict[str, str], size: int, bucket: str) -> bool:
    """Whether S3 accepts a POST of `form` plus a file of `size` bytes under `policy`."""
    values = {name.lower(): value for name, value in form.items()}
    values["bucket"] = bucket
    if datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00")) < datetime.now(UTC):
        return False
    for condition in policy["conditions"]:
        if isinstance(condition, dict):
            [(name, expected)] = condition.items()
            if values.get(name.lower()) != expected:
                return False
            continue
        operator, first, second = condition
        if operator == "content-length-range":
            if not first <= size <= second:
                return False
        elif operator == "eq":
            if values.get(first.lstrip("$").lower()) != second:
                return False
        elif operator == "starts-with":
            if not values.get(first.lstrip("$").lower(), "").startswith(second):
                return False
        else:
            return False
    return True


def upload(form_url: str, fields: dict[str, str], body: bytes, content_type: str) -> int:
    """POST the presigned form as a browser would; answers S3's status."""
    response = httpx.post(
        form_url, data=fields, files={"file": ("upload", body, content_type)}, timeout=10
    )
    return response.status_code


# -- the store on its own ----------------------------------------------------------------------


async def test_lists_a_customers_folder_page_by_page(
    store: S3FileStore, s3: Any, bucket: str
) -> None:
    for name in ("a.pdf", "b.pdf", "c report.pdf", "d.pdf", "e.pdf"):
        put(s3, bucket, f"customers/1001/{name}", name.encode())
    put(s3, bucket, "customers/1001/sub/nested.pdf", b"not a file of the folder")
    put(s3, bucket, "customers/10011/lookalike.pdf", b"another customer's")
    put(s3, bucket, "customers/1002/grace.pdf", b"grace's")

    names: list[str] = []
    after = None
    calls_before = _s3_calls("list_objects_v2")
    for _ in range(4):
        [page] = await store.file_pages([FileQuery(customer_id="1001", first=2, after=after)])
        assert not isinstance(page, Exception)
        assert {f.customer_id for f in page.items} <= {"1001"}
        names += [f.name for f in page.items]
        assert page.cursors == [f.id for f in page.items]
        if not page.has_next_page:
            break
        after = page.end_cursor
    assert names == ["a.pdf", "b.pdf", "c report.pdf", "d.pdf", "e.pdf"]
    assert _s3_calls("list_objects_v2") - calls_before == 3  # one list per page

    whole, grace = await store.file_pages(
        [FileQuery(customer_id="1001"), FileQuery(customer_id="1002")]
    )
    assert not isinstance(whole, Exception)
    assert not isinstance(grace, Exception)
    assert whole.total_count == 5
    assert [f.name for f in grace.items] == ["grace.pdf"]
    [stored] = [f for f in whole.items if f.name == "c report.pdf"]
    assert stored.size == len(b"c report.pdf")
    assert stored.content_type == PDF
    assert stored.uploaded_at.tzinfo is not None
    # a cursor of another customer's folder is refused, not followed
    [foreign] = await store.file_pages(
        [FileQuery(customer_id="1001", after=encode_file_id("1002", "grace.pdf"))]
    )
    assert isinstance(foreign, BadUserInput)


CRAFTED = [
    "1002/grace.pdf",  # well-formed, another customer: the resolver's NOT_FOUND
    "1001/../1002/grace.pdf",
    "1001/sub/nested.pdf",
    "../1002/grace.pdf",
    "1001//grace.pdf",
    "/1002/grace.pdf",
    "1001/..",
    "../customers/1002/grace.pdf",
    "1001\\..\\1002\\grace.pdf",
    "1001/grace.pdf\x00.png",
    "1001/",
    "..",
]


@pytest.mark.parametrize("relative", CRAFTED)
async def test_a_crafted_file_id_never_names_another_customers_key(
    store: S3FileStore, s3: Any, bucket: str, relative: str
) -> None:
    put(s3, bucket, "customers/1002/grace.pdf", b"grace's")
    put(s3, bucket, "customers/1001/sub/nested.pdf", b"nested")
    file_id = "f_" + base64.urlsafe_b64encode(relative.encode()).decode().rstrip("=")
    located = store.key_of(file_id)
    if located is not None:
        customer, name, key = located
        assert key == f"customers/{customer}/{name}"
        assert "/" not in name
        assert ".." not in (customer, name)
        assert customer == relative.split("/", 1)[0]  # whoever it names, it is that customer
    [found] = await store.files([file_id])
    if relative == "1002/grace.pdf":
        assert found is not None
        assert found.customer_id == "1002"  # the resolver then answers NOT_FOUND to 1001
    else:
        assert found is None


async def test_ids_that_are_not_ids_cost_no_call(store: S3FileStore) -> None:
    before = _s3_calls("head_object")
    found = await store.files(["", "f_", "f_!!!!", "x" * 50, "f_" + "A" * 400])
    assert found == [None] * 5
    assert _s3_calls("head_object") == before


async def test_download_link_is_presigned_for_the_key_and_expires(
    store: S3FileStore, s3: Any, bucket: str
) -> None:
    put(s3, bucket, "customers/1001/Résumé 2026.pdf", b"%PDF-1.7 cv")
    [file] = await store.files([encode_file_id("1001", "Résumé 2026.pdf")])
    assert isinstance(file, StoredFile)

    url = store.download_url(file, 300)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert query["X-Amz-Expires"] == ["300"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]  # signature v4
    assert "X-Amz-Signature" in query
    assert unquote(parts.path) == f"/{bucket}/customers/1001/Résumé 2026.pdf"
    async with httpx.AsyncClient() as http:
        download = await http.get(url)
    assert download.status_code == 200
    assert download.content == b"%PDF-1.7 cv"
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9%202026.pdf" in download.headers["content-disposition"]
    # never longer than FILES_URL_MAX_TTL, whatever is asked
    clamped = parse_qs(urlsplit(store.download_url(file, 10**6)).query)
    assert clamped["X-Amz-Expires"] == ["3600"]


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", None, "https://s3.example.com/p"])
@pytest.mark.parametrize("token", ["FwoGZX/session+token=", None])
def test_our_presigned_links_are_byte_for_byte_boto3s(endpoint: str | None, token: str) -> None:
    """gateway.sources.sigv4 signs without boto3's per-call machinery; at the same instant
    its URL is the one boto3 would have made: path and virtual-host addressing, temporary
    credentials, keys and dispositions that need every kind of escaping."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        files_source="s3",
        s3_bucket="docs-bucket",
        s3_endpoint_url=endpoint,
        aws_region="eu-west-1",
    )
    session = boto3.session.Session(
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalr/XUtnFEMI+K7MDENG",
        aws_session_token=token,
    )
    client = s3_client(settings, session)  # what boto3 itself signs, for comparison
    store = S3FileStore(settings, session=session)
    instant = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
    for customer, name in [
        ("1001", "a b.pdf"),
        ("1001", "ünï~c+o&d=e;f'.pdf"),
        ("7", "x%20y#z?.txt"),
    ]:
        file = StoredFile(
            id=encode_file_id(customer, name),
            customer_id=customer,
            name=name,
            size=1,
            content_type=PDF,
            uploaded_at=instant,
        )
        with mock.patch(
            "botocore.auth.get_current_datetime", return_value=instant.replace(tzinfo=None)
        ):
            expected = client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": "docs-bucket",
                    "Key": f"customers/{customer}/{name}",
                    "ResponseContentDisposition": _attachment(name),
                },
                ExpiresIn=900,
            )
            store.download_url(file, 1)  # builds the presigner
            assert store._signer is not None
            store._signer.now = lambda: instant
            assert store.download_url(file, 900) == expected


def test_links_are_signed_with_the_sessions_current_temporary_credentials() -> None:
    """Temporary credentials (an assumed role, an instance profile) rotate behind the boto3
    session: each link carries the key the session holds when it is signed, as boto3's own
    signatures do, never one frozen when the store started."""
    import botocore.session
    from botocore.credentials import CredentialProvider, RefreshableCredentials

    issued: list[str] = []

    def fetch() -> dict[str, str]:
        issued.append(f"ASIAROTATED{len(issued) + 1}")
        # five minutes left is inside botocore's mandatory refresh window: every use refreshes
        expiry = datetime.now(UTC) + timedelta(minutes=5)
        return {
            "access_key": issued[-1],
            "secret_key": f"secret-{len(issued)}",
            "token": f"token-{len(issued)}",
            "expiry_time": expiry.isoformat(),
        }

    class Rotating(CredentialProvider):
        METHOD = "rotating-test"

        def load(self) -> RefreshableCredentials:
            return RefreshableCredentials.create_from_metadata(
                fetch(), refresh_using=fetch, method=self.METHOD
            )

    core = botocore.session.Session()
    core.get_component("credential_provider").insert_before("env", Rotating())
    session = boto3.session.Session(botocore_session=core)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        files_source="s3",
        s3_bucket="docs-bucket",
        s3_endpoint_url="http://127.0.0.1:9000",
    )
    store = S3FileStore(settings, session=session)
    file = StoredFile(
        id=encode_file_id("1001", "a.pdf"),
        customer_id="1001",
        name="a.pdf",
        size=1,
        content_type=PDF,
        uploaded_at=datetime(2026, 11, 28, tzinfo=UTC),
    )
    keys = []
    for _ in range(2):
        query = parse_qs(urlsplit(store.download_url(file, 60)).query)
        keys.append(query["X-Amz-Credential"][0].split("/")[0])
        assert keys[-1] == issued[-1]
        assert query["X-Amz-Security-Token"] == [f"token-{len(issued)}"]
    assert keys[0] != keys[1]


_LISTING = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Name>docs-bucket</Name><Prefix>customers%2F1001%2F</Prefix><KeyCount>1</KeyCount>
<MaxKeys>10</MaxKeys><Delimiter>%2F</Delimiter><EncodingType>url</EncodingType>
<IsTruncated>false</IsTruncated>
<Contents><Key>customers%2F1001%2Fa+b%C3%BC%2B.pdf</Key>
<LastModified>2026-11-28T10:00:00.000Z</LastModified><Size>42</Size></Contents>
</ListBucketResult>"""


@pytest.mark.parametrize("token", ["FwoGZX/session+token=", None])
async def test_the_listing_is_signed_as_s3_checks_it(token: str | None) -> None:
    """The listing leaves through the gateway's HTTP client, not boto3's: a server that
    recomputes the signature from the request it received, with botocore's own signer (as
    S3 does), finds the one we sent; the url-encoded answer is read as boto3 reads it."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    received: list[dict[str, Any]] = []

    async def bucket(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # uvicorn's lifespan: nothing to start
            return
        received.append(
            {
                "path": scope["raw_path"].decode(),
                "query": scope["query_string"].decode(),
                "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            }
        )
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": _LISTING})

    secret = "wJalr/XUtnFEMI+K7MDENG"
    with serve(bucket) as server:
        settings = s3_settings(server.url, "docs-bucket")
        session = boto3.session.Session(
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key=secret,
            aws_session_token=token,
        )
        store = S3FileStore(settings, session=session)
        try:
            [page] = await store.file_pages([FileQuery(customer_id="1001", first=10)])
        finally:
            await store.aclose()
    assert not isinstance(page, Exception)
    [file] = page.items
    assert (file.name, file.size) == ("a bü+.pdf", 42)
    assert file.uploaded_at == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)

    [request] = received
    headers = request["headers"]
    assert request["path"] == "/docs-bucket"
    assert parse_qs(request["query"]) == {
        "list-type": ["2"],
        "prefix": ["customers/1001/"],
        "delimiter": ["/"],
        "max-keys": ["10"],
        "encoding-type": ["url"],
    }
    # S3's check: the canonical request rebuilt from what arrived (the parameters decoded,
    # then encoded as SigV4 wants: the transport sends "/" in a query as is), signed
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in parse_qsl(request["query"], keep_blank_values=True)
    )
    check = AWSRequest(
        method="GET",
        url=f"{server.url}{request['path']}?{canonical_query}",
        headers={"X-Amz-Content-SHA256": headers["x-amz-content-sha256"]},
    )
    sent_at = datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    with mock.patch("botocore.auth.get_current_datetime", return_value=sent_at):
        S3SigV4Auth(Credentials("AKIDEXAMPLE", secret, token), "s3", REGION).add_auth(check)
    assert headers["authorization"] == check.headers["Authorization"]
    assert headers.get("x-amz-security-token") == token


async def test_upload_policy_pins_key_type_and_size_and_the_upload_works(
    store: S3FileStore, s3: Any, bucket: str
) -> None:
    body = b"%PDF-1.7 eleven"
    form = await store.request_upload("1001", "scan 01.pdf", PDF, len(body))
    policy = policy_of(form.fields)
    conditions = policy["conditions"]
    assert {"key": "customers/1001/scan 01.pdf"} in conditions
    assert {"bucket": bucket} in conditions
    assert {"Content-Type": PDF} in conditions
    assert ["content-length-range", 1, len(body)] in conditions
    expires = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    assert timedelta(minutes=14) < expires - datetime.now(UTC) <= timedelta(minutes=15)
    assert form.expires_at == pytest.approx(expires, abs=timedelta(seconds=2))
    assert form.fields["key"] == "customers/1001/scan 01.pdf"
    assert form.fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"

    # what S3 checks: this exact file passes; one byte more, another type or key do not
    assert policy_allows(policy, form.fields, len(body), bucket)
    assert not policy_allows(policy, form.fields, len(body) + 1, bucket)
    assert not policy_allows(policy, form.fields, 0, bucket)
    assert not policy_allows(policy, {**form.fields, "Content-Type": "text/html"}, 5, bucket)
    assert not policy_allows(
        policy, {**form.fields, "key": "customers/1002/scan 01.pdf"}, 5, bucket
    )

    assert await asyncio.to_thread(upload, form.url, form.fields, body, PDF) in (200, 201, 204)
    [stored] = await store.files([form.file_id])
    assert isinstance(stored, StoredFile)
    assert (stored.customer_id, stored.name, stored.size) == ("1001", "scan 01.pdf", len(body))
    assert stored.content_type == PDF
    async with httpx.AsyncClient() as http:
        assert (await http.get(store.download_url(stored, 60))).content == body


@pytest.mark.parametrize(
    ("name", "content_type", "size", "field"),
    [
        ("big.pdf", PDF, 26_214_401, "size"),
        ("empty.pdf", PDF, 0, "size"),
        ("page.html", "text/html", 10, "contentType"),
        ("../1002/x.pdf", PDF, 10, "name"),
    ],
)
async def test_the_store_refuses_what_it_would_not_sign(
    store: S3FileStore, name: str, content_type: str, size: int, field: str
) -> None:
    with pytest.raises(BadUserInput) as refused:
        await store.request_upload("1001", name, content_type, size)
    assert refused.value.extensions["field"] == field


async def test_delete_removes_that_object_only(store: S3FileStore, s3: Any, bucket: str) -> None:
    put(s3, bucket, "customers/1001/a.pdf", b"a")
    put(s3, bucket, "customers/1001/b.pdf", b"b")
    [file] = await store.files([encode_file_id("1001", "a.pdf")])
    assert isinstance(file, StoredFile)
    await store.delete(file)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["customers/1001/b.pdf"]


async def test_s3_failures_are_integration_unavailable(moto_url: str) -> None:
    missing_bucket = S3FileStore(s3_settings(moto_url, "no-such-bucket-here"))
    unreachable = S3FileStore(
        s3_settings(
            f"http://127.0.0.1:{free_port()}",
            "docs",
            retry_max_attempts=1,
            upstream_timeout=1.0,
            breaker_failures=2,
        )
    )
    try:
        [refused] = await missing_bucket.file_pages([FileQuery(customer_id="1001")])
        assert isinstance(refused, IntegrationUnavailable)
        assert refused.extensions["retryable"] is False
        assert refused.extensions["source"] == "s3"
        for _ in range(2):
            [down] = await unreachable.file_pages([FileQuery(customer_id="1001")])
            assert isinstance(down, IntegrationUnavailable)
            assert down.message == "s3 could not be reached"
        assert unreachable.breaker_state == "open"
        [fast] = await unreachable.files([encode_file_id("1001", "a.pdf")])
        assert isinstance(fast, IntegrationUnavailable)
        assert "circuit open" in fast.message
    finally:
        await missing_bucket.aclose()
        await unreachable.aclose()


def _s3_calls(operation: str) -> float:
    value = REGISTRY.get_sample_value(
        "gateway_upstream_requests_total",
        {"source": "s3", "operation": operation, "outcome": "ok"},
    )
    return value or 0.0


# -- the portal on Stripe and S3, through the gateway ---------------------------------------------

PORTAL_HOME = """{ me {
  id name
  invoices(first: 10) {
    totalCount
    edges { node { id number status currency total amountDue amountPaid paidAt source } }
  }
  subscriptions { status plan cancelAtPeriodEnd }
  tickets(first: 10) { totalCount }
  files(first: 10) { totalCount edges { node { id name size contentType downloadUrl } } }
} }"""

FILE = "query($id: ID!) { file(id: $id) { id name downloadUrl(expiresIn: 120) } }"
DELETE = "mutation($id: ID!) { deleteFile(id: $id) { deletedFileId } }"
UPLOAD = """mutation($name: String!, $type: String!, $size: Int!) {
  requestFileUpload(input: {name: $name, contentType: $type, size: $size}) {
    url fileId expiresAt fields { name value } } }"""


@pytest.fixture(scope="module")
def stripe_server() -> Iterator[FakeStripe]:
    with running_fake_stripe(STRIPE_KEY) as fake:
        yield fake


@pytest.fixture
def portal(
    make_settings: Callable[..., Settings],
    redis_url: str,
    cache_prefix: str,
    stripe_server: FakeStripe,
    moto_url: str,
    bucket: str,
    s3: Any,
) -> Iterator[GatewayServer]:
    """A gateway with BILLING_SOURCE=stripe and FILES_SOURCE=s3 (the rest sandbox), Ada
    seeded in both: four invoices, two subscriptions, three documents."""
    stripe_server.reset()
    settings = make_settings(
        billing_source="stripe",
        stripe_api_key=STRIPE_KEY,
        stripe_api_base=stripe_server.url,
        files_source="s3",
        s3_bucket=bucket,
        s3_endpoint_url=moto_url,
        aws_region=REGION,
        redis_url=redis_url,
        cache_prefix=cache_prefix,
        retry_base_delay=0.01,
        breaker_failures=50,
    )
    with ExitStack() as stack:
        server = stack.enter_context(running_gateway(settings))
        ada = stripe_server.add_customer(email="ada@example.com", name="Ada Lovelace")
        link_customer(server, "1001", ada)
        for n, (status, total) in enumerate(
            [("open", 4200), ("paid", 9900), ("void", 1500), ("uncollectible", 800)]
        ):
            stripe_server.add_invoice(
                ada, status=status, total=total, currency="eur", created=1_760_000_000 - n
            )
        stripe_server.add_subscription(ada, status="active", plan="Pro")
        stripe_server.add_subscription(ada, status="canceled", plan="Starter")
        grace = stripe_server.add_customer(email="grace@example.com")
        link_customer(server, "1002", grace)
        server.grace_invoice = stripe_server.add_invoice(grace, total=777)  # type: ignore[attr-defined]
        for name in ("contract.pdf", "invoice-scan.png", "notes.txt"):
            put(s3, bucket, f"customers/1001/{name}", f"body of {name}".encode())
        put(s3, bucket, "customers/1002/grace-only.pdf", b"grace's secret")
        yield server


def test_portal_home_on_stripe_and_s3(portal: GatewayServer) -> None:
    response = portal.query(PORTAL_HOME, token=portal.token("1001"))
    body = response.json()
    assert "errors" not in body, body
    me = body["data"]["me"]
    invoices = [edge["node"] for edge in me["invoices"]["edges"]]
    assert me["invoices"]["totalCount"] == 4
    assert [(i["status"], i["total"], i["amountDue"], i["amountPaid"]) for i in invoices] == [
        ("OPEN", 4200, 4200, 0),
        ("PAID", 9900, 0, 9900),
        ("VOID", 1500, 0, 0),
        ("UNCOLLECTIBLE", 800, 800, 0),
    ]
    assert {i["currency"] for i in invoices} == {"eur"}
    assert {i["source"] for i in invoices} == {"stripe"}
    assert invoices[1]["paidAt"] is not None
    assert sorted((s["status"], s["plan"]) for s in me["subscriptions"]) == [
        ("active", "Pro"),
        ("canceled", "Starter"),
    ]
    assert me["tickets"]["totalCount"] == 12  # the sandbox help desk, untouched

    files = {edge["node"]["name"]: edge["node"] for edge in me["files"]["edges"]}
    assert me["files"]["totalCount"] == 3
    assert set(files) == {"contract.pdf", "invoice-scan.png", "notes.txt"}
    assert files["contract.pdf"]["contentType"] == PDF
    for name, node in files.items():
        link = httpx.get(node["downloadUrl"])
        assert link.status_code == 200
        assert link.content == f"body of {name}".encode()
        assert node["size"] == len(link.content)
        assert parse_qs(urlsplit(node["downloadUrl"]).query)["X-Amz-Expires"] == ["300"]
    own = portal.query(FILE, {"id": files["notes.txt"]["id"]}, token=portal.token("1001"))
    link = own.json()["data"]["file"]["downloadUrl"]
    assert parse_qs(urlsplit(link).query)["X-Amz-Expires"] == ["120"]
    assert httpx.get(link).content == b"body of notes.txt"


def test_another_customers_invoice_or_file_is_not_found(
    portal: GatewayServer, s3: Any, bucket: str
) -> None:
    ada = portal.token("1001")
    invoice = portal.query(
        "query($id: ID!) { invoice(id: $id) { id total } }",
        {"id": portal.grace_invoice},  # type: ignore[attr-defined]
        token=ada,
    ).json()
    assert invoice["data"] == {"invoice": None}
    assert invoice["errors"][0]["extensions"]["code"] == "NOT_FOUND"

    graces = encode_file_id("1002", "grace-only.pdf")
    crafted = [
        graces,
        "f_" + base64.urlsafe_b64encode(b"1001/../1002/grace-only.pdf").decode(),
        "f_" + base64.urlsafe_b64encode(b"../1002/grace-only.pdf").decode(),
        encode_file_id("1001", "grace-only.pdf"),  # her name in Ada's folder: no such file
    ]
    for file_id in crafted:
        response = portal.query(FILE, {"id": file_id}, token=ada)
        assert response.json()["data"] == {"file": None}
        assert response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert "grace-only" not in response.text.replace(file_id, "")
        deleted = portal.query(DELETE, {"id": file_id}, token=ada).json()
        assert deleted["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert s3.get_object(Bucket=bucket, Key="customers/1002/grace-only.pdf")["Body"].read() == (
        b"grace's secret"
    )
    # Grace herself sees it; staff too
    own = portal.query(FILE, {"id": graces}, token=portal.token("1002")).json()
    assert own["data"]["file"]["name"] == "grace-only.pdf"


def test_delete_file_removes_the_customers_own(portal: GatewayServer, s3: Any, bucket: str) -> None:
    ada = portal.token("1001")
    file_id = encode_file_id("1001", "notes.txt")
    before = portal.query(PORTAL_HOME, token=ada).json()["data"]["me"]["files"]["totalCount"]
    assert before == 3
    deleted = portal.query(DELETE, {"id": file_id}, token=ada).json()
    assert deleted["data"]["deleteFile"]["deletedFileId"] == file_id
    keys = {
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="customers/1001/")["Contents"]
    }
    assert keys == {"customers/1001/contract.pdf", "customers/1001/invoice-scan.png"}
    after = portal.query(PORTAL_HOME, token=ada).json()["data"]["me"]["files"]["totalCount"]
    assert after == 2  # at once, not after the cache TTL


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"name": "huge.pdf", "type": PDF, "size": 26_214_401}, "size"),
        ({"name": "page.html", "type": "text/html", "size": 100}, "contentType"),
        ({"name": "run.exe", "type": "application/x-msdownload", "size": 100}, "contentType"),
    ],
    ids=["over-the-size-limit", "html", "executable"],
)
def test_upload_refused_by_the_gateway(
    portal: GatewayServer, variables: dict[str, Any], field: str
) -> None:
    body = portal.query(UPLOAD, variables, token=portal.token("1001")).json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": field}


def test_upload_form_is_what_s3_enforces_and_completion_is_published(
    portal: GatewayServer,
    moto_url: str,
    bucket: str,
    s3: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = _notification_queue(moto_url, s3, bucket)
    ada = portal.token("1001")
    assert portal.query(PORTAL_HOME, token=ada).json()["data"]["me"]["files"]["totalCount"] == 3

    content = b"name,amount\nada,42\n"
    answer = portal.query(
        UPLOAD, {"name": "expenses.csv", "type": "text/csv", "size": len(content)}, token=ada
    ).json()
    assert "errors" not in answer, answer
    form = answer["data"]["requestFileUpload"]
    fields = {f["name"]: f["value"] for f in form["fields"]}
    policy = policy_of(fields)
    assert ["content-length-range", 1, len(content)] in policy["conditions"]
    assert {"Content-Type": "text/csv"} in policy["conditions"]
    assert {"key": "customers/1001/expenses.csv"} in policy["conditions"]
    assert not policy_allows(policy, fields, len(content) + 1, bucket)
    assert not policy_allows(policy, {**fields, "Content-Type": PDF}, len(content), bucket)
    assert policy_allows(policy, fields, len(content), bucket)
    assert upload(form["url"], fields, content, "text/csv") in (200, 201, 204)

    # S3 has the file; the gateway learns it from S3's notification, not from the browser
    store = portal.sources.files
    gateway = portal.gateway
    intake = Intake(gateway.services, gateway.events.publisher)
    notifications = S3UploadNotifications(
        store, queue, region=REGION, endpoint_url=moto_url, wait_seconds=1
    )
    published = _published("FileUploaded")
    with caplog.at_level(logging.INFO, logger="gateway.sources.s3"):
        count = portal.server.call(notifications.poll_once(intake.take))
    assert count == 1
    assert _published("FileUploaded") - published == 1
    [logged] = [r for r in caplog.records if r.getMessage() == "file uploaded"]
    assert logged.file_id == form["fileId"]  # type: ignore[attr-defined]
    # the customer's cached file list was dropped: the new file shows at once
    files = portal.query(PORTAL_HOME, token=ada).json()["data"]["me"]["files"]
    assert files["totalCount"] == 4
    [new] = [e["node"] for e in files["edges"] if e["node"]["id"] == form["fileId"]]
    assert (new["name"], new["size"]) == ("expenses.csv", len(content))
    assert httpx.get(new["downloadUrl"]).content == content

    # S3 delivers at least once: the same notification again publishes nothing new
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Post",
                    "eventTime": "2026-11-28T10:00:00.000Z",
                    "s3": {
                        "bucket": {"name": bucket},
                        "object": {"key": "customers/1001/expenses.csv", "eTag": "e1"},
                    },
                }
            ]
        }
    )
    for _ in range(2):
        events = portal.server.call(notifications.events_of(body))
        portal.server.call(intake.take(events))
    assert _published("FileUploaded") - published == 2  # the first copy only


def test_the_gateway_consumes_upload_notifications_itself(
    make_settings: Callable[..., Settings],
    redis_url: str,
    cache_prefix: str,
    moto_url: str,
    bucket: str,
    s3: Any,
) -> None:
    """With S3_EVENTS_QUEUE_URL the app polls the queue while it runs: a finished upload
    is published and the customer's cached file list dropped, with no call from anyone."""
    queue = _notification_queue(moto_url, s3, bucket)
    before = _published("FileUploaded")
    put(s3, bucket, "customers/1001/contract.pdf", b"signed")  # waits on the queue
    settings = make_settings(
        files_source="s3",
        s3_bucket=bucket,
        s3_endpoint_url=moto_url,
        s3_events_queue_url=queue,
        aws_region=REGION,
        redis_url=redis_url,
        cache_prefix=cache_prefix,
    )
    with running_gateway(settings) as server:
        ada = server.token("1001")
        # the notification queued before the start is taken once the app runs
        deadline = time.monotonic() + 15
        while _published("FileUploaded") == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _published("FileUploaded") == before + 1
        assert server.query(PORTAL_HOME, token=ada).json()["data"]["me"]["files"]["totalCount"] == 1
        published = _published("FileUploaded")
        put(s3, bucket, "customers/1001/receipt.pdf", b"paid")  # as the browser's POST would
        deadline = time.monotonic() + 15
        while _published("FileUploaded") == published and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _published("FileUploaded") == published + 1
        files = server.query(PORTAL_HOME, token=ada).json()["data"]["me"]["files"]
        assert files["totalCount"] == 2  # the cached list of one file was dropped


def _notification_queue(moto_url: str, s3: Any, bucket: str) -> str:
    """An SQS queue receiving the bucket's s3:ObjectCreated:* notifications under customers/."""
    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name=REGION)
    queue: str = sqs.create_queue(QueueName=f"uploads-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "customers/"}]}},
                }
            ]
        },
    )
    return queue


def test_stripe_down_costs_only_billing_fields_files_still_served(
    portal: GatewayServer, stripe_server: FakeStripe
) -> None:
    stripe_server.fail_all(500)
    body = portal.query(PORTAL_HOME, token=portal.token("1001")).json()
    me = body["data"]["me"]
    assert me["name"] == "Ada Lovelace"
    assert me["invoices"] is None
    assert me["subscriptions"] is None
    assert me["files"]["totalCount"] == 3
    assert me["tickets"]["totalCount"] == 12
    for error in body["errors"]:
        assert error["path"] in (["me", "invoices"], ["me", "subscriptions"])
        assert error["extensions"]["code"] == "INTEGRATION_UNAVAILABLE"
        assert error["extensions"]["source"] == "stripe"
    stripe_server.recover()


def _published(event_type: str) -> float:
    value = REGISTRY.get_sample_value("gateway_events_published_total", {"type": event_type})
    return value or 0.0
