"""Query and Mutation: the root fields of DESIGN section 6."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.types import Info

from gateway import domain
from gateway.context import Context
from gateway.resolvers import billing, customers, files, tickets
from gateway.schema.internals import resolve_info
from gateway.schema.prefetch import selected_arguments
from gateway.schema.types import (
    BillingPortalSession,
    Customer,
    DeliveryState,
    File,
    Invoice,
    Ticket,
)

__all__ = ["Mutation", "Query"]


def _path(info: Info[Context, Any]) -> list[Any]:
    return list(info.path.as_list())


@strawberry.type
class Query:
    @strawberry.field(description="The signed-in customer.")
    async def me(self, info: Info[Context, Any]) -> Customer | None:
        ctx = info.context
        customer_id = ctx.viewer.customer_id
        if customer_id is not None:
            # a customer's files need only its id: fetched beside the CRM call, not after
            # it; the CRM load is asked for first, so its call goes out first
            ctx.loaders.customer.load(customer_id)
            for arguments in selected_arguments(resolve_info(info), "files"):
                files.prefetch_page(
                    ctx, customer_id, arguments.get("first"), arguments.get("after")
                )
        return await customers.me(ctx, _path(info))  # type: ignore[return-value]

    @strawberry.field(description="Staff, services, or the customer itself.")
    async def customer(self, info: Info[Context, Any], id: strawberry.ID) -> Customer | None:
        return await customers.customer(info.context, id, _path(info))  # type: ignore[return-value]

    @strawberry.field(description="Staff and services; at most 100 ids, batched.")
    async def customers(
        self, info: Info[Context, Any], ids: list[strawberry.ID]
    ) -> list[Customer | None]:
        return await customers.customers(info.context, ids)  # type: ignore[return-value]

    @strawberry.field
    async def invoice(self, info: Info[Context, Any], id: strawberry.ID) -> Invoice | None:
        return await billing.invoice(info.context, id, _path(info))  # type: ignore[return-value]

    @strawberry.field
    async def ticket(self, info: Info[Context, Any], id: strawberry.ID) -> Ticket | None:
        return await tickets.ticket(info.context, id, _path(info))  # type: ignore[return-value]

    @strawberry.field
    async def file(self, info: Info[Context, Any], id: strawberry.ID) -> File | None:
        return await files.file(info.context, id, _path(info))  # type: ignore[return-value]


@strawberry.input
class CreateTicketInput:
    subject: str
    description: str
    priority: str | None = None
    client_mutation_id: str | None = None


@strawberry.type
class CreateTicketPayload:
    ticket: Ticket
    client_mutation_id: str | None
    delivery: DeliveryState = strawberry.field(
        description="DELIVERED: the help desk has the ticket; QUEUED: the help desk is "
        "unavailable, the gateway keeps the ticket (a provisional one, id `pending-…`) and "
        "delivers it (docs/design.md: the outbox)."
    )
    accepted_at: datetime


@strawberry.input
class UpdateProfileInput:
    name: str | None = None
    phone: str | None = None
    company: str | None = None


@strawberry.input
class FileUploadInput:
    name: str
    content_type: str
    size: int = strawberry.field(description="Bytes; checked against the upload limit.")


@strawberry.type
class UploadField:
    name: str
    value: str


@strawberry.type(description="A presigned form: POST the fields, then the file as `file`.")
class FileUploadPayload:
    url: str
    fields: list[UploadField]
    file_id: strawberry.ID
    expires_at: datetime


@strawberry.type
class DeleteFilePayload:
    deleted_file_id: strawberry.ID
    delivery: DeliveryState = strawberry.field(
        description="DELIVERED: the file is gone; QUEUED: the store is unavailable, the file "
        "is hidden and its deletion delivered later."
    )
    accepted_at: datetime


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="CRM write; the cached copy is refreshed. While the CRM is unavailable "
        "the change is kept and shown at once (`profileDelivery` QUEUED)."
    )
    async def update_profile(self, info: Info[Context, Any], input: UpdateProfileInput) -> Customer:
        changes = domain.ProfileChanges(name=input.name, phone=input.phone, company=input.company)
        return await customers.update_profile(info.context, changes)  # type: ignore[return-value]

    @strawberry.mutation(description="A retry with the same clientMutationId creates nothing new.")
    async def create_ticket(
        self, info: Info[Context, Any], input: CreateTicketInput
    ) -> CreateTicketPayload:
        draft = tickets.validate_draft(input.subject, input.description, input.priority)
        created, delivery = await tickets.create_ticket(
            info.context, draft, input.client_mutation_id
        )
        return CreateTicketPayload(
            ticket=created,  # type: ignore[arg-type]
            client_mutation_id=input.client_mutation_id,
            delivery=delivery.state,
            accepted_at=delivery.accepted_at,
        )

    @strawberry.mutation
    async def request_file_upload(
        self, info: Info[Context, Any], input: FileUploadInput
    ) -> FileUploadPayload:
        form = await files.request_file_upload(
            info.context, input.name, input.content_type, input.size
        )
        return FileUploadPayload(
            url=form.url,
            fields=[UploadField(name=k, value=v) for k, v in form.fields.items()],
            file_id=strawberry.ID(form.file_id),
            expires_at=form.expires_at,
        )

    @strawberry.mutation
    async def delete_file(self, info: Info[Context, Any], id: strawberry.ID) -> DeleteFilePayload:
        deleted, delivery = await files.delete_file(info.context, id)
        return DeleteFilePayload(
            deleted_file_id=strawberry.ID(deleted),
            delivery=delivery.state,
            accepted_at=delivery.accepted_at,
        )

    @strawberry.mutation(description="A Stripe customer-portal URL for the signed-in customer.")
    async def create_billing_portal_session(
        self, info: Info[Context, Any], return_url: str
    ) -> BillingPortalSession:
        return await billing.create_billing_portal_session(info.context, return_url)  # type: ignore[return-value]
