"""Every environment variable of DESIGN section 4, validated at start-up."""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.encryption import GENERATE_KEY_HINT, DataCipher, generate_key
from gateway.redis_client import cluster_url

__all__ = ["DEFAULT_RATE_LIMITS", "RateLimit", "Settings", "load_dev_secret"]

DEV_SECRET_FILE = Path(".dev-secret")
DEV_DATA_KEY_FILE = Path(".dev-data-key")

# Each provider's documented limit: (calls, window seconds).
DEFAULT_RATE_LIMITS: dict[str, tuple[int, float]] = {
    "stripe": (25, 1.0),
    "hubspot": (100, 10.0),
    "zendesk": (700, 60.0),
    "xero": (60, 60.0),
    "quickbooks": (500, 60.0),
    # S3: 5,500 GET/HEAD requests per second per prefix (each customer is a prefix)
    "s3": (5500, 1.0),
}

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class RateLimit:
    """`25/1s` -> 25 calls per 1 second."""

    __slots__ = ("calls", "per")

    def __init__(self, calls: int, per: float) -> None:
        self.calls = calls
        self.per = per

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        match = _RATE_RE.match(text)
        if not match:
            raise ValueError(f"rate limit {text!r} is not of the form CALLS/PERIOD, e.g. 25/1s")
        return cls(int(match.group(1)), float(match.group(2)) * _UNIT[match.group(3)])

    def __repr__(self) -> str:
        return f"RateLimit({self.calls}/{self.per}s)"


# The provider kinds whose fields a soft deadline may defer (PROVIDER_SOFT_DEADLINES; the
# fields: gateway/schema/incremental.py PROVIDER_FIELDS). CRM is not one: every other
# field of a page hangs from the customer it answers.
SOFT_DEADLINE_KINDS = ("billing", "helpdesk", "files")


def _csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", case_sensitive=False, populate_by_name=True
    )

    gateway_env: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = None

    crm_source: Literal["sandbox", "hubspot"] = "sandbox"
    billing_source: Literal["sandbox", "stripe", "quickbooks", "xero"] = "sandbox"
    helpdesk_source: Literal["sandbox", "zendesk"] = "sandbox"
    files_source: Literal["sandbox", "s3"] = "sandbox"
    events_backend: Literal["auto", "memory", "redis", "sqs", "rabbitmq"] = "auto"

    # Sandbox knobs: simulated provider latency and failure (e.g. SANDBOX_FAIL=billing).
    sandbox_latency_ms: float = 0.0
    sandbox_fail: Annotated[list[str], NoDecode] = Field(default_factory=list)
    sandbox_files_dir: Path = Path(".sandbox-files")

    cache_ttl_crm: int = 300
    cache_ttl_billing: int = 60
    cache_ttl_helpdesk: int = 60
    cache_ttl_files: int = 30
    cache_stale_ttl: int = 3600
    cache_prefix: str = "pg:"
    # Whole-response cache per viewer (in front of execution), invalidated by entity tags.
    response_cache: Literal["off", "on"] = "on"
    response_cache_max_bytes: int = 1_000_000
    # Kept for the benchmark's comparison: off = no dataloader batching, no entity cache.
    gateway_batching: bool = True

    hubspot_access_token: SecretStr | None = None
    hubspot_api_base: str = "https://api.hubapi.com"
    hubspot_client_secret: SecretStr | None = None
    hubspot_object: Literal["contacts", "companies"] = "contacts"
    hubspot_billing_id_property: str = "stripe_customer_id"
    hubspot_helpdesk_id_property: str = "zendesk_user_id"

    stripe_api_key: SecretStr | None = None
    stripe_api_base: str = "https://api.stripe.com"
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_version: str | None = None

    quickbooks_client_id: str | None = None
    quickbooks_client_secret: SecretStr | None = None
    quickbooks_realm_id: str | None = None
    quickbooks_refresh_token: SecretStr | None = None
    quickbooks_api_base: str = "https://quickbooks.api.intuit.com"
    quickbooks_token_url: str = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
    quickbooks_webhook_verifier: SecretStr | None = None

    xero_client_id: str | None = None
    xero_client_secret: SecretStr | None = None
    xero_tenant_id: str | None = None
    xero_refresh_token: SecretStr | None = None
    xero_api_base: str = "https://api.xero.com/api.xro/2.0"
    xero_token_url: str = "https://identity.xero.com/connect/token"
    xero_webhook_key: SecretStr | None = None

    zendesk_base_url: str | None = None
    zendesk_email: str | None = None
    zendesk_api_token: SecretStr | None = None
    zendesk_webhook_secret: SecretStr | None = None

    s3_bucket: str | None = None
    s3_prefix: str = "customers/"
    s3_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    # the SQS queue the bucket sends its s3:ObjectCreated:* notifications to (uploads done)
    s3_events_queue_url: str | None = None

    files_url_ttl: int = 300
    files_url_max_ttl: int = 3600
    files_max_upload_bytes: int = 26_214_400
    files_allowed_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "application/pdf",
            "image/png",
            "image/jpeg",
            "text/plain",
            "text/csv",
            "application/zip",
            "application/msword",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "application/vnd.ms-excel",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "application/vnd.ms-powerpoint",
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        ]
    )

    auth_jwks_url: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_customer_claim: str = "customer_id"
    auth_roles_claim: str = "roles"
    auth_dev_secret: SecretStr | None = None
    service_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    rate_limit_stripe: str | None = None
    rate_limit_hubspot: str | None = None
    rate_limit_zendesk: str | None = None
    rate_limit_xero: str | None = None
    rate_limit_quickbooks: str | None = None
    rate_limit_s3: str | None = None

    # Incoming limits per viewer, per service key and per client IP ("off" disables one).
    rate_limit_viewer: str = "600/60s"
    rate_limit_service: str = "6000/60s"
    rate_limit_ip: str = "1200/60s"

    retry_max_attempts: int = Field(3, ge=1)
    retry_base_delay: float = 0.2
    retry_max_delay: float = 5.0
    upstream_timeout: float = 10.0
    # A provider's answer past this many bytes (decoded) fails as INTEGRATION_UNAVAILABLE.
    upstream_max_response_bytes: int = Field(8_000_000, ge=10_000)
    breaker_failures: int = Field(5, ge=1)
    breaker_reset: float = 30.0

    query_max_depth: int = 10
    query_max_cost: int = 5000
    query_max_aliases: int = 30
    # The request pipeline's other bounds (docs/design.md 1a): each is checked before the
    # more expensive work it protects.
    request_max_bytes: int = Field(1_000_000, ge=1_000)  # an HTTP body or a WebSocket message
    query_max_tokens: int = Field(5_000, ge=100)  # the parser stops past this many
    query_max_fields: int = Field(1_000, ge=1)  # field selections, fragments expanded
    # pairs of same-named fields the overlapping-fields validation may compare
    query_max_field_pairs: int = Field(2_000, ge=0)
    query_max_directives: int = Field(50, ge=0)
    query_max_variable_depth: int = Field(32, ge=1)  # nesting of variables and extensions
    query_max_representations: int = Field(500, ge=1)  # of one _entities field
    query_cache_max_bytes: int = Field(50_000_000, ge=0)  # parsed documents kept in process
    ws_max_subscriptions_per_socket: int = Field(20, ge=1)  # operations running at once
    ws_max_subscriptions_per_viewer: int = Field(100, ge=1)  # live ones, in this process
    # ms per provider kind, e.g. "billing=300,helpdesk=500": a field of that kind still
    # unanswered then goes in a later payload, for clients that accept multipart/mixed
    provider_soft_deadlines: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)

    notify_backend: Literal["log", "smtp", "ses"] = "log"
    smtp_url: str | None = None
    notify_from: str = "portal@example.com"
    sqs_queue_url: str | None = None
    sqs_dead_letter_url: str | None = None
    rabbitmq_url: str | None = None
    rabbitmq_queue: str = "portal-gateway.events"
    # a message taken but not acknowledged within this many seconds goes to another consumer
    events_redelivery_timeout: float = Field(60.0, gt=0)
    # sends of one notification (and deliveries of one message) before it is dead-lettered
    events_max_attempts: int = Field(5, ge=1)
    # `portal-gateway worker` serves /metrics here (0: not at all)
    worker_metrics_port: int = Field(9102, ge=0, le=65535)
    # the outbox of provider writes (docs/design.md "The outbox"): on/off; deliveries of one
    # write before it is dead-lettered; its age past which it is; the pause between
    # deliveries (full-jitter exponential from base to max); how long a delivered write's
    # record (a provisional ticket id's mapping) is kept
    outbox: Literal["on", "off"] = "on"
    outbox_max_attempts: int = Field(50, ge=1)
    outbox_max_age: float = Field(86_400.0, gt=0)
    outbox_retry_base: float = Field(1.0, gt=0)
    outbox_retry_max: float = Field(30.0, gt=0)
    outbox_keep_delivered: int = Field(86_400, ge=60)
    # tests only (refused in production): the worker waits this long between the provider's
    # answer and recording it, so a test can kill it there
    outbox_pause_after_send: float = Field(0.0, ge=0)

    webhook_tolerance: int = 300
    public_base_url: str | None = None
    token_encryption_key: SecretStr | None = None
    # keys sealing customer data in Redis and event backends, newest first (gateway/encryption.py)
    data_encryption_keys: SecretStr | None = None
    persisted_queries: Literal["off", "apq", "only"] = "off"
    persisted_queries_manifest: Path | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    gateway_introspection: bool | None = None
    gateway_graphiql: bool | None = None
    otel_exporter_otlp_endpoint: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # seconds in-flight requests get to finish after SIGTERM before they are cut off
    shutdown_grace: int = Field(20, ge=0)

    # What a client may hold of the server (gateway/server.py, gateway/body_deadline.py):
    # the proxies whose X-Forwarded-For/-Proto are believed (none: the socket peer is the
    # client); seconds for a request's headers, for its body, for an idle connection
    # between requests; bytes of a request line plus headers.
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(default_factory=list)
    http_header_timeout: float = Field(5.0, gt=0)
    http_body_timeout: float = Field(10.0, gt=0)
    http_keepalive_timeout: float = Field(5.0, gt=0)
    http_max_header_bytes: int = Field(65_536, ge=1024)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "sandbox_fail",
        "files_allowed_types",
        "cors_origins",
        "service_api_keys",
        "forwarded_allow_ips",
        mode="before",
    )
    @classmethod
    def _split_csv(cls, value: object) -> object:
        return _csv(value)

    @field_validator("provider_soft_deadlines", mode="before")
    @classmethod
    def _parse_soft_deadlines(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        deadlines: dict[str, object] = {}
        for entry in value.split(","):
            if not entry.strip():
                continue
            kind, equals, milliseconds = entry.partition("=")
            if not equals:
                raise ValueError(f"{entry!r}: write kind=milliseconds, e.g. billing=300")
            deadlines[kind.strip().lower()] = milliseconds.strip()
        return deadlines

    @field_validator("provider_soft_deadlines")
    @classmethod
    def _check_soft_deadlines(cls, value: dict[str, int]) -> dict[str, int]:
        for kind, milliseconds in value.items():
            if kind not in SOFT_DEADLINE_KINDS:
                raise ValueError(
                    f"{kind!r} is not a provider kind a soft deadline applies to "
                    f"(one of {', '.join(SOFT_DEADLINE_KINDS)})"
                )
            if milliseconds < 0:
                raise ValueError(f"{kind}={milliseconds}: milliseconds are at least 0")
        return value

    def soft_deadlines(self) -> dict[str, float]:
        """PROVIDER_SOFT_DEADLINES in seconds per provider kind."""
        return {kind: ms / 1000 for kind, ms in self.provider_soft_deadlines.items()}

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        # uvicorn takes an entry that is no address or network, and a "*" in a list, as a
        # name no TCP peer ever has: a typo would silently trust no proxy at all
        if "*" in value and len(value) > 1:
            raise ValueError("* (every peer) stands alone: uvicorn reads it only so")
        for entry in value:
            if entry == "*":
                continue
            try:
                ipaddress.ip_network(entry)  # an address is a network of one
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address, a CIDR network (host bits zero) or *"
                ) from None
        return value

    @field_validator(
        "rate_limit_stripe",
        "rate_limit_hubspot",
        "rate_limit_zendesk",
        "rate_limit_xero",
        "rate_limit_quickbooks",
        "rate_limit_s3",
        "rate_limit_viewer",
        "rate_limit_service",
        "rate_limit_ip",
    )
    @classmethod
    def _check_rate(cls, value: str | None) -> str | None:
        if value is not None and value != "off":
            RateLimit.parse(value)
        return value

    @field_validator("data_encryption_keys")
    @classmethod
    def _check_data_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            DataCipher.from_setting(value.get_secret_value())  # names the bad entry, not its value
        return value

    @model_validator(mode="after")
    def _check_redis_cluster(self) -> Settings:
        # a prefix with braces would pick every key's hash slot: all in one slot
        cluster = bool(self.redis_url) and cluster_url(self.redis_url or "") is not None
        if cluster and ("{" in self.cache_prefix or "}" in self.cache_prefix):
            raise ValueError(
                "CACHE_PREFIX must not contain { or } with a Redis Cluster REDIS_URL: "
                "braces pick the hash slot, and every key would land in one slot"
            )
        return self

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value:
            cluster_url(value)  # raises for a cluster URL that cannot work (names why)
        return value

    def incoming_limit(self, kind: str) -> RateLimit | None:
        """The incoming limit of "viewer", "service" or "ip"; None when off."""
        value = getattr(self, f"rate_limit_{kind}")
        return None if value == "off" else RateLimit.parse(value)

    @model_validator(mode="after")
    def _production_guard(self) -> Settings:
        if self.gateway_env != "production":
            return self
        problems = self.production_problems()
        if problems:
            raise ValueError("refusing to start in production:\n  - " + "\n  - ".join(problems))
        return self

    def production_problems(self) -> list[str]:
        """One line per setting that production refuses."""
        problems: list[str] = []
        if self.auth_dev_secret is not None:
            problems.append(
                "AUTH_DEV_SECRET is set: dev tokens are forgeable by anyone with the secret; "
                "use AUTH_JWKS_URL"
            )
        if self.auth_jwks_url is None and not self.service_api_keys:
            problems.append(
                "no authentication configured: set AUTH_JWKS_URL with AUTH_ISSUER and AUTH_AUDIENCE"
            )
        if self.auth_jwks_url is not None:
            # the provider signs every application's tokens with the same keys
            if not self.auth_audience:
                problems.append(
                    "AUTH_AUDIENCE is unset: a token the identity provider issued for any "
                    "other application would be accepted; set it to this gateway's audience"
                )
            if not self.auth_issuer:
                problems.append(
                    "AUTH_ISSUER is unset: a token's issuer would not be checked; "
                    "set it to the identity provider's issuer URL"
                )
        for kind in ("crm", "billing", "helpdesk", "files"):
            if getattr(self, f"{kind}_source") == "sandbox":
                problems.append(
                    f"{kind.upper()}_SOURCE=sandbox serves demo data: configure a real provider"
                )
        if self.data_encryption_keys is None:
            problems.append(
                "DATA_ENCRYPTION_KEYS is unset: customer data in Redis and the event queue "
                "would be stored unencrypted; " + GENERATE_KEY_HINT
            )
        if self.outbox_pause_after_send:
            problems.append("OUTBOX_PAUSE_AFTER_SEND is a test setting: unset it")
        if self.persisted_queries == "only" and self.persisted_queries_manifest is None:
            problems.append("PERSISTED_QUERIES=only needs PERSISTED_QUERIES_MANIFEST")
        if self.gateway_introspection is None:
            problems.append(
                "GATEWAY_INTROSPECTION is unset: introspection exposes the whole schema; "
                "set it to false (or true on purpose)"
            )
        secrets_needed = {
            "stripe": ("billing_source", "stripe_webhook_secret"),
            "xero": ("billing_source", "xero_webhook_key"),
            "quickbooks": ("billing_source", "quickbooks_webhook_verifier"),
            "hubspot": ("crm_source", "hubspot_client_secret"),
            "zendesk": ("helpdesk_source", "zendesk_webhook_secret"),
        }
        for provider, (source_field, secret_field) in secrets_needed.items():
            if getattr(self, source_field) == provider and getattr(self, secret_field) is None:
                problems.append(
                    f"{secret_field.upper()} is unset: {provider} webhooks could not be verified"
                )
        return problems

    @property
    def production(self) -> bool:
        return self.gateway_env == "production"

    @property
    def introspection(self) -> bool:
        if self.gateway_introspection is not None:
            return self.gateway_introspection
        return not self.production

    @property
    def graphiql(self) -> bool:
        """Whether a browser's GET /graphql gets GraphiQL (and /static/graphiql/ is served)."""
        if self.gateway_graphiql is not None:
            return self.gateway_graphiql
        return not self.production

    def rate_limit(self, provider: str) -> RateLimit:
        configured = getattr(self, f"rate_limit_{provider}", None)
        if configured:
            return RateLimit.parse(configured)
        calls, per = DEFAULT_RATE_LIMITS.get(provider, (100, 1.0))
        return RateLimit(calls, per)

    def ttl(self, kind: str) -> int:
        """Fresh TTL in seconds of a cache kind (crm, billing, helpdesk, files)."""
        return int(getattr(self, f"cache_ttl_{kind}"))

    def data_cipher(self) -> DataCipher:
        """The cipher of DATA_ENCRYPTION_KEYS; in development, without it, of a key generated
        once into .dev-data-key (production refuses to start without the setting)."""
        if self.data_encryption_keys is not None:
            return DataCipher.from_setting(self.data_encryption_keys.get_secret_value())
        if self.production:
            raise ValueError("DATA_ENCRYPTION_KEYS is unset; " + GENERATE_KEY_HINT)
        return DataCipher.from_setting(_dev_file(DEV_DATA_KEY_FILE, generate_key))

    def dev_secret(self) -> str | None:
        """The HS256 secret for dev tokens; generated once into .dev-secret in development."""
        if self.auth_dev_secret is not None:
            return self.auth_dev_secret.get_secret_value()
        if self.production:
            return None
        return load_dev_secret()


def load_dev_secret(path: Path = DEV_SECRET_FILE) -> str:
    """Read the development secret, creating it (mode 600) on first use."""
    return _dev_file(path, lambda: secrets.token_urlsafe(32))


def _dev_file(path: Path, make: Callable[[], str]) -> str:
    """A development secret kept in `path` (git-ignored), made (mode 600) on first use, so
    every process started from the same folder shares it."""
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    value = make()
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(value + "\n")
    return value
