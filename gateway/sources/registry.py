"""Builds the configured adapters: one line of wiring per provider."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.redis_client import RedisClient
from gateway.settings import Settings
from gateway.sources.base import BillingSource, CrmSource, FileStore, HelpdeskSource
from gateway.sources.hubspot import HubSpotCrm
from gateway.sources.local_files import LocalFileStore
from gateway.sources.quickbooks import QuickBooksBilling
from gateway.sources.sandbox import SandboxBilling, SandboxCrm, SandboxHelpdesk, demo_data
from gateway.sources.xero import XeroBilling
from gateway.sources.zendesk import ZendeskHelpdesk

__all__ = ["Sources", "build_sources"]


@dataclass(slots=True)
class Sources:
    crm: CrmSource
    billing: BillingSource
    helpdesk: HelpdeskSource
    files: FileStore

    def all(self) -> list[CrmSource | BillingSource | HelpdeskSource | FileStore]:
        return [self.crm, self.billing, self.helpdesk, self.files]

    async def aclose(self) -> None:
        for source in self.all():
            await source.aclose()


def base_url(settings: Settings) -> str:
    return settings.public_base_url or f"http://{settings.host}:{settings.port}"


def build_sources(settings: Settings, redis: RedisClient | None = None) -> Sources:
    """The adapters the settings choose; `redis` carries the shared upstream rate limits."""
    data = demo_data()
    latency = settings.sandbox_latency_ms
    failing = set(settings.sandbox_fail)
    crm: CrmSource
    billing: BillingSource
    helpdesk: HelpdeskSource
    files: FileStore

    if settings.crm_source == "sandbox":
        crm = SandboxCrm(data, latency, "crm" in failing)
    elif settings.crm_source == "hubspot":
        crm = HubSpotCrm(settings, redis)
    else:
        raise NotImplementedError(f"CRM_SOURCE={settings.crm_source} is not built yet")
    if settings.billing_source == "sandbox":
        billing = SandboxBilling(data, latency, "billing" in failing)
    elif settings.billing_source == "stripe":
        from gateway.sources.stripe import StripeBilling  # the SDK is imported only when used

        billing = StripeBilling(settings, redis)
    elif settings.billing_source == "quickbooks":
        billing = QuickBooksBilling(settings, redis)
    elif settings.billing_source == "xero":
        billing = XeroBilling(settings, redis)
    else:
        raise NotImplementedError(f"BILLING_SOURCE={settings.billing_source} is not built yet")
    if settings.helpdesk_source == "sandbox":
        helpdesk = SandboxHelpdesk(data, latency, "helpdesk" in failing)
    elif settings.helpdesk_source == "zendesk":
        helpdesk = ZendeskHelpdesk(settings, redis)
    else:
        raise NotImplementedError(f"HELPDESK_SOURCE={settings.helpdesk_source} is not built yet")
    if settings.files_source == "sandbox":
        store = LocalFileStore(
            settings.sandbox_files_dir,
            secret=settings.dev_secret() or "",
            base_url=base_url(settings),
            max_upload_bytes=settings.files_max_upload_bytes,
            allowed_types=settings.files_allowed_types,
            max_ttl=settings.files_url_max_ttl,
            latency_ms=latency,
            fail="files" in failing,
        )
        store.seed(data.files)
        files = store
    elif settings.files_source == "s3":
        from gateway.sources.s3 import S3FileStore  # boto3 is imported only when used

        files = S3FileStore(settings, redis=redis)
    else:
        raise NotImplementedError(f"FILES_SOURCE={settings.files_source} is not built yet")
    return Sources(crm=crm, billing=billing, helpdesk=helpdesk, files=files)
