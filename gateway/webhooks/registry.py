"""The webhooks of the providers whose signing secret is configured: one line each."""

from __future__ import annotations

from gateway.settings import Settings
from gateway.webhooks.hubspot import HubSpotWebhook
from gateway.webhooks.provider import WebhookProvider
from gateway.webhooks.quickbooks import QuickBooksWebhook
from gateway.webhooks.stripe import StripeWebhook
from gateway.webhooks.xero import XeroWebhook
from gateway.webhooks.zendesk import ZendeskWebhook

__all__ = ["build_providers"]


def build_providers(settings: Settings) -> dict[str, WebhookProvider]:
    providers: list[WebhookProvider] = []
    tolerance = settings.webhook_tolerance
    if settings.stripe_webhook_secret:
        providers.append(
            StripeWebhook(settings.stripe_webhook_secret.get_secret_value(), tolerance)
        )
    if settings.hubspot_client_secret:
        providers.append(
            HubSpotWebhook(
                settings.hubspot_client_secret.get_secret_value(),
                tolerance,
                settings.hubspot_object,
            )
        )
    if settings.zendesk_webhook_secret:
        providers.append(
            ZendeskWebhook(settings.zendesk_webhook_secret.get_secret_value(), tolerance)
        )
    if settings.xero_webhook_key:
        providers.append(XeroWebhook(settings.xero_webhook_key.get_secret_value()))
    if settings.quickbooks_webhook_verifier:
        providers.append(QuickBooksWebhook(settings.quickbooks_webhook_verifier.get_secret_value()))
    return {provider.name: provider for provider in providers}
