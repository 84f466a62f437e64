"""The write kinds: how each is sent through the adapter protocols of gateway/sources/base.py,
and what the gateway's own copies need once the provider has it. No provider is named here."""

from __future__ import annotations

from gateway.cache.codec import Codec
from gateway.cache.entity import EntityCache
from gateway.domain import Customer, QueuedWrite, Ticket, WriteKind
from gateway.errors import GatewayError, IntegrationUnavailable
from gateway.sources.registry import Sources

__all__ = [
    "KIND_NAMES",
    "customer_view_changed",
    "customer_written",
    "file_deleted",
    "plain_reason",
    "send",
    "ticket_created",
    "unavailable",
]

customer_codec = Codec[Customer](Customer)

# what a customer reads about a write, and the provider's role in plain words
KIND_NAMES = {
    WriteKind.CREATE_TICKET: ("your request", "the help desk"),
    WriteKind.UPDATE_PROFILE: ("your profile change", "the customer records system"),
    WriteKind.DELETE_FILE: ("the file deletion", "the document store"),
}


def unavailable(error: BaseException) -> bool:
    """Whether a failed write may succeed later unchanged: the provider was down, timed out,
    throttled, or its breaker was open (never: it refused the write)."""
    return isinstance(error, IntegrationUnavailable) and error.retryable


async def send(write: QueuedWrite, sources: Sources) -> Ticket | Customer | None:
    """Send the write once (the upstream client retries within, with the write's key):
    answers the ticket created, the customer as stored, or None for a deletion."""
    if write.kind is WriteKind.CREATE_TICKET:
        assert write.requester_id is not None
        assert write.draft is not None
        return await sources.helpdesk.create_ticket(
            write.requester_id, write.draft, write.idempotency_key
        )
    if write.kind is WriteKind.UPDATE_PROFILE:
        assert write.changes is not None
        return await sources.crm.update_profile(write.customer_id, write.changes)
    assert write.file is not None
    await sources.files.delete(write.file)
    return None


async def ticket_created(cache: EntityCache, requester_id: str) -> None:
    """The requester's cached lists go; their next pages come from the provider's own lists."""
    await cache.drop_tags([f"helpdesk:{requester_id}"])
    await cache.note_changes([f"helpdesk:{requester_id}"])


async def customer_written(cache: EntityCache, customer: Customer) -> None:
    """Every cached page holding the customer goes; then write-through, so the next read
    sees the new value at once instead of after the TTL."""
    tag = f"customer:{customer.id}"
    await cache.drop_tags([tag])
    await cache.put("crm", "customer", customer.id, customer, customer_codec, tags=[tag])


async def customer_view_changed(cache: EntityCache, customer_id: str) -> None:
    """The customer's own cached answers go: they show the outbox's state, which changed."""
    await cache.drop_tags([f"customer:{customer_id}"])


async def file_deleted(cache: EntityCache, customer_id: str) -> None:
    await cache.drop_tags([f"files:{customer_id}"])


def plain_reason(write: QueuedWrite, error: BaseException | None, why: str = "") -> str:
    """Why a write failed, for the customer: what it was, who refused it, and why."""
    what, provider = KIND_NAMES[write.kind]
    if why:
        return f"{provider.capitalize()} could not be reached, so {what} was not sent: {why}."
    if isinstance(error, GatewayError) and not isinstance(error, IntegrationUnavailable):
        return f"{provider.capitalize()} did not accept {what}: {error.message}."
    # the provider's own words stay in the log: they can quote what was sent
    return f"{provider.capitalize()} did not accept {what}."
