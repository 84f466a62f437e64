"""The Apollo Federation v2 schema of portal-gateway."""

from __future__ import annotations

import strawberry

from gateway.schema.federation import FederationSchema
from gateway.schema.root import Mutation, Query
from gateway.schema.subscriptions import Subscription
from gateway.schema.types import BillingPortalSession, BillingSubscription, File, Invoice, Ticket

__all__ = ["build_schema", "print_sdl"]


def build_schema() -> strawberry.federation.Schema:
    return FederationSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[Invoice, Ticket, File, BillingSubscription, BillingPortalSession],
        federation_version="2.5",
    )


def print_sdl() -> str:
    """The SDL that schema.graphql must equal (federation directives included)."""
    return build_schema().as_str() + "\n"
