"""Domain events as bytes: JSON of the tagged msgspec Structs of gateway/domain.py, sealed
(gateway/encryption.py) with the stream, queue or channel name as associated data before
they reach a backend."""

from __future__ import annotations

import logging

import msgspec

from gateway.domain import (
    CustomerDeleted,
    CustomerUpdated,
    DomainEvent,
    FileDeleted,
    FileUploaded,
    InvoicePaid,
    InvoiceUpdated,
    TicketUpdated,
    WriteQueued,
)
from gateway.encryption import DataCipher, Undecryptable
from gateway.observability import CACHE_UNDECRYPTABLE, labelled

__all__ = [
    "EVENT_TYPES",
    "UNREADABLE",
    "AnyEvent",
    "decode_event",
    "encode_event",
    "open_event",
    "seal_event",
]

log = logging.getLogger(__name__)

# Every concrete event; the "type" tag (the class name) picks one when decoding.
AnyEvent = (
    InvoicePaid
    | InvoiceUpdated
    | CustomerUpdated
    | CustomerDeleted
    | TicketUpdated
    | FileUploaded
    | FileDeleted
    | WriteQueued
)
EVENT_TYPES: tuple[type[DomainEvent], ...] = (
    InvoicePaid,
    InvoiceUpdated,
    CustomerUpdated,
    CustomerDeleted,
    TicketUpdated,
    FileUploaded,
    FileDeleted,
    WriteQueued,
)

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)


def encode_event(event: DomainEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> DomainEvent:
    """The event encoded in `data`; raises msgspec.DecodeError / ValidationError otherwise."""
    return _decoder.decode(data)


# what open_event raises for a message that is no event of ours
UNREADABLE = (Undecryptable, msgspec.DecodeError, msgspec.ValidationError)


def seal_event(cipher: DataCipher, where: str, event: DomainEvent) -> bytes:
    """The event as stored in `where` (a stream, queue or channel name)."""
    return cipher.seal(encode_event(event), where.encode())


def open_event(cipher: DataCipher, where: str, data: bytes) -> DomainEvent:
    """The event sealed in `where`; raises one of UNREADABLE (an Undecryptable one is
    counted in gateway_cache_undecryptable_total{kind="events"})."""
    try:
        plaintext = cipher.open(data, where.encode())
    except Undecryptable as why:
        labelled(CACHE_UNDECRYPTABLE, "events").inc()
        log.warning("an event did not decrypt: %s", why)
        raise
    return decode_event(plaintext)
