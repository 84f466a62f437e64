"""gateway/encryption.py: sealing under the first key, opening under any, bound to where."""

from __future__ import annotations

import os

import pytest

from gateway.encryption import DataCipher, Undecryptable, generate_key

KEY_A, KEY_B = generate_key(), generate_key()
PAGE = b'{"data":{"me":{"name":"Ada Lovelace","email":"ada@example.com"}}}' * 40


def test_a_sealed_value_opens_only_where_it_was_sealed() -> None:
    cipher = DataCipher.from_setting(KEY_A)
    sealed = cipher.seal(PAGE, b"pg:resp:customer:1001:abc")
    assert b"Ada" not in sealed
    assert cipher.open(sealed, b"pg:resp:customer:1001:abc") == PAGE
    with pytest.raises(Undecryptable, match="moved from another key"):
        cipher.open(sealed, b"pg:resp:customer:1002:abc")
    # a fresh nonce each time: the same value never seals to the same bytes
    assert cipher.seal(PAGE, b"k") != cipher.seal(PAGE, b"k")


def test_the_first_key_seals_and_every_key_opens() -> None:
    old = DataCipher.from_setting(KEY_A)
    rotating = DataCipher.from_setting(f"{KEY_B}, {KEY_A}")
    retired = DataCipher.from_setting(KEY_B)
    written_before = old.seal(b"v", b"k")
    assert rotating.open(written_before, b"k") == b"v"
    written_after = rotating.seal(b"v", b"k")
    assert written_after[1:5] == retired.key_id != old.key_id  # the key id beside the value
    assert retired.open(written_after, b"k") == b"v"
    with pytest.raises(Undecryptable, match="not in DATA_ENCRYPTION_KEYS"):
        retired.open(written_before, b"k")
    assert rotating.key_ids == [retired.key_id.hex(), old.key_id.hex()]


@pytest.mark.parametrize("position", [0, 3, 10, 20, -1])
def test_any_flipped_byte_is_refused(position: int) -> None:
    cipher = DataCipher.from_setting(KEY_A)
    sealed = bytearray(cipher.seal(PAGE, b"k"))
    sealed[position] ^= 0x01
    with pytest.raises(Undecryptable):
        cipher.open(bytes(sealed), b"k")


@pytest.mark.parametrize("stored", [b"", b"1", b'{"plain": "json"}', os.urandom(40)])
def test_what_was_never_sealed_is_refused(stored: bytes) -> None:
    with pytest.raises(Undecryptable):
        DataCipher.from_setting(KEY_A).open(stored, b"k")


def test_pseudonyms_hide_the_value_and_follow_every_key() -> None:
    rotating = DataCipher.from_setting(f"{KEY_B},{KEY_A}")
    pseudonym = rotating.pseudonym("ada@example.com")
    assert "ada" not in pseudonym
    assert len(pseudonym) == 32
    assert pseudonym == DataCipher.from_setting(KEY_B).pseudonym("ada@example.com")
    assert rotating.pseudonyms("ada@example.com") == [
        pseudonym,
        DataCipher.from_setting(KEY_A).pseudonym("ada@example.com"),
    ]


@pytest.mark.parametrize("setting", ["", " , ", "short", KEY_A + ",c2hvcnQ="])
def test_a_bad_setting_is_refused_with_how_to_generate_a_key(setting: str) -> None:
    with pytest.raises(ValueError, match="generate one with"):
        DataCipher.from_setting(setting)
