"""Documents: a customer's files, file(id), download links, uploads, deletion."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import Any

import msgspec

from gateway.context import Context
from gateway.domain import (
    Customer,
    DeliveryState,
    FileDeleted,
    FileQuery,
    Page,
    QueuedWrite,
    StoredFile,
    UploadForm,
    WriteDelivery,
    WriteKind,
)
from gateway.errors import BadUserInput, NotFound
from gateway.outbox import Outbox, new_write_id
from gateway.outbox.view import deleting, own_writes
from gateway.outbox.writes import file_deleted
from gateway.resolvers.access import check_owner, check_page_args, require_customer, require_viewer

__all__ = [
    "customer_files",
    "delete_file",
    "download_url",
    "file",
    "prefetch_page",
    "request_file_upload",
]

log = logging.getLogger(__name__)


async def customer_files(
    ctx: Context, customer: Customer, first: int, after: str | None, path: list[Any]
) -> Page[StoredFile]:
    check_page_args(first, after)
    query = FileQuery(customer_id=customer.id, first=first, after=after)
    page: Page[StoredFile] = await ctx.load(ctx.loaders.file_page, query, path)
    hidden = deleting(await own_writes(ctx, customer.id))
    if not hidden or not any(f.id in hidden for f in page.items):
        return page
    kept = [i for i, f in enumerate(page.items) if f.id not in hidden]
    return Page(
        items=[page.items[i] for i in kept],
        next_cursor=page.next_cursor,
        total_count=None
        if page.total_count is None
        else page.total_count - (len(page.items) - len(kept)),
        cursors=None if page.cursors is None else [page.cursors[i] for i in kept],
    )


def prefetch_page(ctx: Context, customer_id: str, first: int | None, after: Any) -> None:
    """Start loading a page of the customer's files now; `customer_files` with the same
    arguments finds it in the request's loader (gateway/schema/prefetch.py)."""
    first = 20 if first is None else first
    try:
        check_page_args(first, after)
    except BadUserInput:
        return  # the field itself reports it
    query = FileQuery(customer_id=customer_id, first=first, after=after)
    started = ctx.loaders.file_page.load(query)
    # read here too, so a page nobody awaits (the customer turned out unknown) logs nothing
    started.add_done_callback(lambda done: done.cancelled() or done.exception())


async def file(ctx: Context, id: str, path: list[Any]) -> StoredFile:
    require_viewer(ctx)
    if len(id) > 1024:
        raise NotFound()
    found: StoredFile | None = await ctx.load(ctx.loaders.file, id, path)
    if found is None:
        raise NotFound()
    check_owner(ctx, found.customer_id)
    if found.id in deleting(await own_writes(ctx, found.customer_id)):
        raise NotFound()  # its deletion waits in the outbox: gone, as the customer sees it
    return found


def download_url(ctx: Context, found: StoredFile, expires_in: int) -> str:
    if expires_in <= 0:
        raise BadUserInput("expiresIn must be a positive number of seconds", field="expiresIn")
    # clamped, not refused: a link never lives longer than the configured maximum
    ttl = min(expires_in, ctx.settings.files_url_max_ttl)
    return ctx.services.sources.files.download_url(found, ttl)


async def request_file_upload(ctx: Context, name: str, content_type: str, size: int) -> UploadForm:
    customer_id = require_customer(ctx)
    settings = ctx.settings
    name = name.strip()
    if not name or len(name) > 255 or "/" in name or "\\" in name or name in (".", ".."):
        raise BadUserInput("name must be a plain file name without path separators", field="name")
    if size <= 0 or size > settings.files_max_upload_bytes:
        raise BadUserInput(
            f"size must be between 1 and {settings.files_max_upload_bytes} bytes", field="size"
        )
    if content_type not in settings.files_allowed_types:
        raise BadUserInput(f"content type {content_type!r} is not allowed", field="contentType")
    return await ctx.services.sources.files.request_upload(customer_id, name, content_type, size)


async def delete_file(ctx: Context, id: str) -> tuple[str, WriteDelivery]:
    """Delete the file, or hide it and keep its deletion in the outbox while the store is
    unavailable (QUEUED)."""
    customer_id = require_customer(ctx)
    found = await file(ctx, id, [])
    if found.customer_id != customer_id:
        raise NotFound()
    now = datetime.now(UTC)
    write = QueuedWrite(
        id=new_write_id(),
        kind=WriteKind.DELETE_FILE,
        customer_id=customer_id,
        seq=0,
        accepted_at=now,
        idempotency_key=f"deleteFile:{customer_id}:{found.id}",
        file=found,
    )
    outbox: Outbox | None = ctx.services.outbox
    if outbox is None:
        await ctx.services.sources.files.delete(found)
        done = msgspec.structs.replace(write, state=DeliveryState.DELIVERED, delivered_at=now)
    else:
        done, _ = await outbox.submit(write, ctx.services.sources)
    ctx.loaders.file.clear(id)
    if done.state is DeliveryState.QUEUED:
        return found.id, done.delivery
    await file_deleted(ctx.services.cache, customer_id)
    events = ctx.services.events
    if events is not None:
        deleted = FileDeleted(
            event_id=f"delete:{secrets.token_hex(12)}",
            customer_id=customer_id,
            occurred_at=datetime.now(UTC),
            file_id=found.id,
        )
        try:
            await events.publish(deleted)
        except Exception:  # the file is gone either way; a lost event must not fail the call
            log.exception("FileDeleted not published", extra={"file_id": found.id})
    return found.id, done.delivery
