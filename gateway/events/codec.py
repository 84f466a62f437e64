"""Domain events as bytes: JSON of the tagged msgspec Structs of gateway/domain.py."""

from __future__ import annotations

import msgspec

from gateway.domain import (
    CustomerUpdated,
    DomainEvent,
    FileDeleted,
    FileUploaded,
    InvoicePaid,
    InvoiceUpdated,
    TicketUpdated,
)

__all__ = ["EVENT_TYPES", "AnyEvent", "decode_event", "encode_event"]

# Every concrete event; the "type" tag (the class name) picks one when decoding.
AnyEvent = (
    InvoicePaid | InvoiceUpdated | CustomerUpdated | TicketUpdated | FileUploaded | FileDeleted
)
EVENT_TYPES: tuple[type[DomainEvent], ...] = (
    InvoicePaid,
    InvoiceUpdated,
    CustomerUpdated,
    TicketUpdated,
    FileUploaded,
    FileDeleted,
)

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)


def encode_event(event: DomainEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> DomainEvent:
    """The event encoded in `data`; raises msgspec.DecodeError / ValidationError otherwise."""
    return _decoder.decode(data)
