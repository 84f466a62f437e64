"""Customer data at rest: the one codec every writer to Redis and to an event backend uses.

A sealed value is `version (1 byte) | key id (4) | nonce (12) | AES-256-GCM ciphertext + tag`.
The associated data is where the value lives (its full cache key, its stream or channel
name), so a value copied under another key does not open. DATA_ENCRYPTION_KEYS lists
keys newest first: the first seals, every one opens (by key id), so a key is rotated by
putting the new one first and retiring the old one once its values have expired.

Keys and names in Redis must not carry personal data either: `pseudonym` is an HMAC under
a secret derived from the sealing key, for emails, IP addresses and the like in keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "GENERATE_KEY_HINT",
    "DataCipher",
    "Undecryptable",
    "generate_key",
]

_VERSION = 1
_KEY_ID_SIZE = 4
_NONCE_SIZE = 12
_HEADER_SIZE = 1 + _KEY_ID_SIZE + _NONCE_SIZE
_TAG_SIZE = 16
_PSEUDONYMS_KEPT = 16_384

GENERATE_KEY_HINT = (
    'generate one with: python -c "import base64, os; '
    'print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'
)


class Undecryptable(Exception):
    """A sealed value that does not open: unknown (retired or foreign) key, tampered bytes,
    moved under another key, or not sealed at all. The message names which, never the value."""


def generate_key() -> str:
    """A new data key: 32 random bytes, url-safe base64."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _parse_key(text: str, position: int) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError(
            f"DATA_ENCRYPTION_KEYS entry {position} is not 32 bytes of url-safe base64; "
            + GENERATE_KEY_HINT
        )
    return raw


def _derive(key: bytes, purpose: bytes) -> bytes:
    return hmac.new(key, b"portal-gateway/" + purpose, hashlib.sha256).digest()


def _pseudonym(secret: bytes, value: str) -> str:
    return hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:32]


class DataCipher:
    """Seals and opens values under DATA_ENCRYPTION_KEYS (first seals, all open)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("DATA_ENCRYPTION_KEYS is empty; " + GENERATE_KEY_HINT)
        self._by_id: dict[bytes, AESGCM] = {}
        self._pseudonym_secrets: list[bytes] = []
        for key in keys:
            key_id = _derive(key, b"key-id")[:_KEY_ID_SIZE]
            self._by_id.setdefault(key_id, AESGCM(key))
            self._pseudonym_secrets.append(_derive(key, b"pseudonym"))
        self.key_id = next(iter(self._by_id))  # the first key's
        self._sealer = self._by_id[self.key_id]
        self._header = bytes([_VERSION]) + self.key_id
        self._pseudonyms: dict[str, str] = {}

    @classmethod
    def from_setting(cls, value: str) -> DataCipher:
        """From DATA_ENCRYPTION_KEYS: comma-separated keys, newest first."""
        parts = [part.strip() for part in value.split(",") if part.strip()]
        return cls([_parse_key(part, index + 1) for index, part in enumerate(parts)])

    @property
    def key_ids(self) -> list[str]:
        """The ids (hex) of the keys that open values; the first is the sealing key's."""
        return [self.key_id.hex()] + [k.hex() for k in self._by_id if k != self.key_id]

    def seal(self, plaintext: bytes, where: bytes) -> bytes:
        """`plaintext` encrypted under the first key, bound to `where` (its key or stream)."""
        nonce = os.urandom(_NONCE_SIZE)
        return self._header + nonce + self._sealer.encrypt(nonce, plaintext, where)

    def open(self, sealed: bytes, where: bytes) -> bytes:
        """The plaintext sealed under `where`; raises Undecryptable otherwise."""
        if len(sealed) < _HEADER_SIZE + _TAG_SIZE or sealed[0] != _VERSION:
            raise Undecryptable("not a sealed value")
        aead = self._by_id.get(sealed[1 : 1 + _KEY_ID_SIZE])
        if aead is None:
            raise Undecryptable("sealed under a key not in DATA_ENCRYPTION_KEYS")
        try:
            return aead.decrypt(
                sealed[1 + _KEY_ID_SIZE : _HEADER_SIZE], sealed[_HEADER_SIZE:], where
            )
        except InvalidTag:
            raise Undecryptable("tampered with, or moved from another key") from None

    def pseudonym(self, value: str) -> str:
        """What stands for `value` (an email, an IP address) in a Redis key: 128 bits of
        HMAC-SHA256 under a secret derived from the sealing key. Remembered (a bounded
        dict): the rate limits ask for the same few identities on every request."""
        found = self._pseudonyms.get(value)
        if found is None:
            found = _pseudonym(self._pseudonym_secrets[0], value)
            if len(self._pseudonyms) >= _PSEUDONYMS_KEPT:
                self._pseudonyms.clear()
            self._pseudonyms[value] = found
        return found

    def pseudonyms(self, value: str) -> list[str]:
        """`value`'s pseudonym under every key (newest first): what erasure looks for, as
        keys written before a rotation still carry the older one."""
        return list(dict.fromkeys(_pseudonym(secret, value) for secret in self._pseudonym_secrets))
