"""EncryptedCache over a real Redis: values sealed under their key, key rotation without a
flush, and values that do not open read as misses and counted, never raised."""

from __future__ import annotations

import redis.asyncio
from prometheus_client import REGISTRY

from gateway.cache.encrypted import EncryptedCache
from gateway.cache.redis import RedisCache
from gateway.encryption import DataCipher, generate_key

KEY_A, KEY_B = generate_key(), generate_key()


def undecryptable(kind: str) -> float:
    return REGISTRY.get_sample_value("gateway_cache_undecryptable_total", {"kind": kind}) or 0.0


def sealed_by(backend: RedisCache, keys: str, prefix: str) -> EncryptedCache:
    return EncryptedCache(backend, DataCipher.from_setting(keys), prefix=prefix)


async def test_keys_rotate_without_a_flush(cache: RedisCache, cache_prefix: str) -> None:
    old_key = f"{cache_prefix}crm:customer:1"
    new_key = f"{cache_prefix}crm:customer:2"
    before_rotation = sealed_by(cache, KEY_A, cache_prefix)
    await before_rotation.set_many([(old_key, b"written under A", 60)], {})

    # step 1: B added first on every replica; what A sealed still reads
    rotating = sealed_by(cache, f"{KEY_B},{KEY_A}", cache_prefix)
    assert await rotating.get_many([old_key]) == [b"written under A"]
    await rotating.set_many([(new_key, b"written under B", 60)], {})

    # step 2: A retired; what A sealed is a miss, counted, and B's values read
    counted = undecryptable("crm")
    retired = sealed_by(cache, KEY_B, cache_prefix)
    assert await retired.get_many([old_key, new_key]) == [None, b"written under B"]
    assert undecryptable("crm") == counted + 1


async def test_every_write_path_seals_and_every_read_path_opens(
    cache: RedisCache, raw: redis.asyncio.Redis[bytes], cache_prefix: str
) -> None:
    cache = sealed_by(cache, KEY_A, cache_prefix)
    resp, idem = f"{cache_prefix}resp:customer:1:x", f"{cache_prefix}idem:y"
    await cache.set_many([(resp, b"a page of Ada's", 60)], {f"{cache_prefix}tag:t": [resp]})
    assert await cache.add(idem, b"ticket 7", 60) is True
    assert await cache.add(idem, b"ticket 8", 60) is False
    for key in (resp, idem):
        stored = await raw.get(key)
        assert stored is not None
        assert b"Ada" not in stored
        assert b"ticket" not in stored
    counts, page = await cache.count_and_get([(f"{cache_prefix}rl:v:1", 60)], resp)
    assert (counts, page) == ([1], b"a page of Ada's")
    assert await cache.get_many([idem]) == [b"ticket 7"]
    assert await cache.erase([f"{cache_prefix}tag:t"], [idem]) == [resp, idem]
    assert await cache.get_many([resp, idem]) == [None, None]


async def test_a_tampered_value_is_a_miss_and_counted(
    cache: RedisCache, raw: redis.asyncio.Redis[bytes], cache_prefix: str
) -> None:
    cache = sealed_by(cache, KEY_A, cache_prefix)
    key = f"{cache_prefix}resp:customer:1:x"
    await cache.set_many([(key, b"a page", 60)], {})
    stored = bytearray(await raw.get(key) or b"")
    stored[20] ^= 0x80
    await raw.set(key, bytes(stored))
    counted = undecryptable("resp")
    assert await cache.get_many([key]) == [None]
    assert await cache.count_and_get([], key) == ([], None)
    assert undecryptable("resp") == counted + 2
