"""BoundedLRU: an in-process map bounded by the bytes of its values."""

from __future__ import annotations

from gateway.cache.bounded import BoundedLRU


def test_the_least_recently_used_go_first_once_the_budget_is_spent() -> None:
    cache: BoundedLRU[str] = BoundedLRU(max_bytes=800)
    for key in "abcd":
        assert cache.put(key, key * 2, size=100)
    assert cache.get("a") == "aa"  # a is now the most recently used
    for key in "efgh":
        cache.put(key, key, size=100)
    cache.put("i", "i", size=100)  # 900 bytes: the oldest, b, goes
    assert cache.get("b") is None
    assert cache.get("a") == "aa"
    assert cache.bytes == 800
    assert len(cache) == 8


def test_a_value_over_an_eighth_of_the_budget_is_not_kept() -> None:
    cache: BoundedLRU[str] = BoundedLRU(max_bytes=800)
    cache.put("small", "s", size=50)
    assert not cache.put("huge", "h", size=101)
    assert "huge" not in cache
    assert cache.get("small") == "s"
    assert cache.bytes == 50


def test_replacing_a_key_counts_its_new_size_only() -> None:
    cache: BoundedLRU[str] = BoundedLRU(max_bytes=800)
    cache.put("k", "v1", size=100)
    cache.put("k", "v2", size=60)
    assert cache.get("k") == "v2"
    assert cache.bytes == 60
