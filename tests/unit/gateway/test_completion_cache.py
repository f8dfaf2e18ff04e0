"""The completion cache: LRU order, the byte bound, expiry, and its three metric series."""

from __future__ import annotations

import pytest
from gateway_testing import Clock
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.cache import ENTRY_OVERHEAD_BYTES, CompletionCache, cache_key, is_cacheable
from gateway.inference_metrics import CacheMetrics
from gateway.schema import ChatCompletionRequest, Message


@pytest.fixture
def registry():
    return CollectorRegistry()


def make_cache(registry, max_bytes, ttl=60.0, clock=None):
    metrics = CacheMetrics(
        Counter("cache_hits", "", ["cache_name"], registry=registry).labels("c"),
        Counter("cache_misses", "", ["cache_name"], registry=registry).labels("c"),
        Gauge("cache_size_bytes", "", ["cache_name"], registry=registry).labels("c"),
    )
    return CompletionCache(max_bytes, ttl, metrics, clock or Clock())


def put(cache, key: bytes, size: int) -> None:
    cache.put(key, b"x" * size, provider="p", model="m", prompt_tokens=1, completion_tokens=1)


def entry_bytes(key: bytes, size: int) -> int:
    return len(key) + size + ENTRY_OVERHEAD_BYTES


class TestCompletionCache:
    def test_hit_and_miss_are_counted(self, registry):
        """A stored key is a hit, any other a miss, each counted."""
        cache = make_cache(registry, 10_000)
        put(cache, b"a", 10)
        assert cache.get(b"a").body == b"x" * 10
        assert cache.get(b"b") is None
        assert registry.get_sample_value("cache_hits_total", {"cache_name": "c"}) == 1.0
        assert registry.get_sample_value("cache_misses_total", {"cache_name": "c"}) == 1.0

    def test_byte_bound_evicts_least_recently_used(self, registry):
        """Adding past the bound evicts the least recently *used* entry, and the size never exceeds it."""
        bound = 3 * entry_bytes(b"a", 100)
        cache = make_cache(registry, bound)
        for key in (b"a", b"b", b"c"):
            put(cache, key, 100)
        cache.get(b"a")  # a is now the most recent; b the least
        put(cache, b"d", 100)
        assert cache.get(b"b") is None
        assert cache.get(b"a") is not None
        assert cache.size_bytes <= bound
        assert registry.get_sample_value("cache_size_bytes", {"cache_name": "c"}) == cache.size_bytes == bound

    def test_entry_larger_than_the_bound_is_not_kept(self, registry):
        """One body bigger than the whole cache is not stored and evicts nothing."""
        cache = make_cache(registry, 1000)
        put(cache, b"a", 10)
        put(cache, b"huge", 5000)
        assert len(cache) == 1
        assert cache.get(b"huge") is None

    def test_entries_expire(self, registry):
        """After its TTL an entry is a miss and its bytes are released."""
        clock = Clock()
        cache = make_cache(registry, 10_000, ttl=5, clock=clock)
        put(cache, b"a", 10)
        clock.now = 5.0
        assert cache.get(b"a") is None
        assert cache.size_bytes == 0

    def test_replacing_a_key_keeps_the_size_right(self, registry):
        """Storing the same key twice counts its bytes once."""
        cache = make_cache(registry, 10_000)
        put(cache, b"a", 10)
        put(cache, b"a", 20)
        assert cache.size_bytes == entry_bytes(b"a", 20)


class TestKeyAndPolicy:
    def request(self, **fields):
        return ChatCompletionRequest(model="m", messages=[Message(role="user", content="hi")], **fields)

    def test_key_covers_parameters(self):
        """Different parameters, different keys; equal requests, equal keys."""
        assert cache_key(self.request(temperature=0)) == cache_key(self.request(temperature=0))
        assert cache_key(self.request(temperature=0)) != cache_key(self.request(temperature=0, seed=1))

    def test_key_ignores_dict_order(self):
        """`logit_bias` in another order is the same request."""
        first = self.request(logit_bias={"1": 1.0, "2": 2.0})
        second = self.request(logit_bias={"2": 2.0, "1": 1.0})
        assert cache_key(first) == cache_key(second)

    def test_policy(self):
        """Temperature 0 or an opt-in is cacheable; streams never are."""
        assert is_cacheable(self.request(temperature=0), opted_in=False)
        assert not is_cacheable(self.request(), opted_in=False)
        assert is_cacheable(self.request(temperature=1), opted_in=True)
        assert not is_cacheable(self.request(temperature=0, stream=True), opted_in=True)
