"""Compact, versioned cache values: msgpack of the domain model inside a small envelope.

The version is derived from the model's JSON schema, so a deploy that changes a model
reads the old entries as misses instead of failing on them.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Generic, TypeVar

import msgspec

__all__ = ["Codec", "Envelope"]

T = TypeVar("T")


class Envelope(msgspec.Struct, array_like=True):
    version: int
    stored_at: float  # unix time
    payload: msgspec.Raw


_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
_encoder = msgspec.msgpack.Encoder()


class Codec(Generic[T]):
    """Encodes and decodes one type; `decode` answers None for foreign or corrupt bytes."""

    def __init__(self, type_: Any) -> None:
        schema = msgspec.json.encode(msgspec.json.schema(type_))
        self.version = int.from_bytes(hashlib.blake2b(schema, digest_size=4).digest(), "big")
        self._decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(type_)

    def encode(self, value: T, stored_at: float | None = None) -> bytes:
        envelope = Envelope(
            self.version,
            time.time() if stored_at is None else stored_at,
            msgspec.Raw(_encoder.encode(value)),
        )
        return _encoder.encode(envelope)

    def decode(self, data: bytes) -> tuple[T, float] | None:
        """(value, stored_at), or None when the bytes are from another model version."""
        try:
            envelope = _envelope_decoder.decode(data)
            if envelope.version != self.version:
                return None
            return self._decoder.decode(envelope.payload), envelope.stored_at
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
