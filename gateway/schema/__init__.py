"""The Apollo Federation v2 schema of portal-gateway."""

from __future__ import annotations

from functools import cache

import strawberry
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.name_converter import NameConverter

from gateway.schema.federation import FederationSchema
from gateway.schema.root import Mutation, Query
from gateway.schema.subscriptions import Subscription
from gateway.schema.types import BillingPortalSession, BillingSubscription, File, Invoice, Ticket

__all__ = ["build_schema", "print_sdl"]


class _RememberedNames(NameConverter):
    """strawberry's names, each worked out once: strawberry converts every argument's
    Python name to camelCase again on every resolver call (8% of a cold staff page's CPU
    in `make bench` profiles)."""

    @cache  # noqa: B019 - one converter per schema, which lives as long as the process
    def apply_naming_config(self, name: str) -> str:
        return super().apply_naming_config(name)


def build_schema() -> strawberry.federation.Schema:
    return FederationSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[Invoice, Ticket, File, BillingSubscription, BillingPortalSession],
        federation_version="2.5",
        config=StrawberryConfig(
            name_converter=_RememberedNames(),
            # @defer and @stream (graphql-core 3.3's incremental delivery, issue 28)
            enable_experimental_incremental_execution=True,
        ),
    )


def print_sdl() -> str:
    """The SDL that schema.graphql must equal (federation directives included)."""
    return build_schema().as_str() + "\n"
