"""The completion cache in Redis (Debian's redis-server, private): shared by replicas, TTL, the byte bound,
`cache_size_bytes`, and a Redis that is down."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.cache import ENTRY_OVERHEAD_BYTES
from gateway.inference_metrics import CacheMetrics
from gateway.redis_cache import RedisCompletionCache
from support.processes import free_port
from telemetry.shared_redis import SharedRedis

pytestmark = pytest.mark.anyio
KEY_BYTES = 32  # cache keys are sha256 digests


class Replica:
    """One gateway's view: its own client, registry and metrics, on the shared Redis."""

    def __init__(self, url: str, max_bytes: int, ttl: float = 60.0) -> None:
        self.registry = CollectorRegistry()
        self.redis = SharedRedis(url, self.registry, timeout=0.3, retry_seconds=0.5)
        metrics = CacheMetrics(
            Counter("cache_hits", "", ["cache_name"], registry=self.registry).labels("completions"),
            Counter("cache_misses", "", ["cache_name"], registry=self.registry).labels("completions"),
            Gauge("cache_size_bytes", "", ["cache_name"], registry=self.registry).labels("completions"),
        )
        self.cache = RedisCompletionCache(self.redis, max_bytes, ttl, metrics)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {"cache_name": "completions"}) or 0.0

    async def put(self, key: bytes, size: int) -> None:
        await self.cache.put(key, b"x" * size, provider="p", model="m", prompt_tokens=3, completion_tokens=4)


@pytest.fixture
def redis_url(redis_server):
    redis_server.flush()
    return redis_server.url()


def charged(size: int) -> int:
    return size + ENTRY_OVERHEAD_BYTES + KEY_BYTES


def key(name: str) -> bytes:
    return name.encode().ljust(KEY_BYTES, b"-")


class TestShared:
    async def test_a_miss_on_one_replica_is_a_hit_on_another(self, redis_url):
        """Replica A stores what it missed; replica B serves it, with who answered and the token counts."""
        a, b = Replica(redis_url, 10_000), Replica(redis_url, 10_000)
        assert await a.cache.get(key("k")) is None
        await a.put(key("k"), 100)
        hit = await b.cache.get(key("k"))
        assert (hit.body, hit.provider, hit.model, hit.prompt_tokens, hit.completion_tokens) == (
            b"x" * 100,
            "p",
            "m",
            3,
            4,
        )
        assert (a.value("cache_misses_total"), b.value("cache_hits_total")) == (1.0, 1.0)
        await asyncio.gather(a.redis.close(), b.redis.close())

    async def test_entries_expire_after_the_ttl(self, redis_url):
        """The TTL is Redis' own expiry on the entry."""
        a = Replica(redis_url, 10_000, ttl=0.2)
        await a.put(key("k"), 10)
        assert await a.cache.get(key("k")) is not None
        await asyncio.sleep(0.3)
        assert await a.cache.get(key("k")) is None
        await a.cache.refresh()
        assert a.value("cache_size_bytes") == 0  # the account forgets expired entries too
        await a.redis.close()


class TestByteBound:
    async def test_the_bound_holds_across_replicas_and_the_oldest_goes_first(self, redis_url):
        """Three entries fit; a fourth from another replica evicts the oldest. Every replica reports the
        same shared total, which never exceeds the bound."""
        bound = 3 * charged(100)
        a, b = Replica(redis_url, bound), Replica(redis_url, bound)
        for name in ("a", "b", "c"):
            await a.put(key(name), 100)
            await asyncio.sleep(0.002)  # distinct insertion times
        assert a.value("cache_size_bytes") == bound
        await b.put(key("d"), 100)
        assert await b.cache.get(key("a")) is None
        assert all([await b.cache.get(key(name)) is not None for name in ("b", "c", "d")])
        assert b.value("cache_size_bytes") == bound
        await a.cache.refresh()
        assert a.value("cache_size_bytes") == bound
        await asyncio.gather(a.redis.close(), b.redis.close())

    async def test_an_entry_larger_than_the_bound_is_not_kept(self, redis_url):
        a = Replica(redis_url, charged(100))
        await a.put(key("big"), 101)
        assert await a.cache.get(key("big")) is None
        assert a.value("cache_size_bytes") == 0
        await a.redis.close()

    async def test_replacing_a_key_keeps_the_size_right(self, redis_url):
        """Storing a key again replaces the entry and its charge."""
        a = Replica(redis_url, 10_000)
        await a.put(key("k"), 100)
        await a.put(key("k"), 50)
        assert a.value("cache_size_bytes") == charged(50)
        assert (await a.cache.get(key("k"))).body == b"x" * 50
        await a.redis.close()


class TestRedisDown:
    async def test_down_redis_is_a_counted_miss_and_is_retried_after_the_back_off(self, redis_server):
        """Nothing listening: lookups miss without raising, are counted, and Redis is only tried again after
        the back-off; once it answers, the cache works again."""
        redis_server.flush()
        a = Replica(f"redis://127.0.0.1:{free_port()}/0", 10_000)
        assert await a.cache.get(key("k")) is None
        await a.put(key("k"), 10)  # skipped during the back-off, no error
        assert await a.cache.get(key("k")) is None
        assert a.value("cache_misses_total") == 2
        assert a.value("redis_unavailable_total", {"operation": "cache_get"}) == 2
        assert a.value("redis_unavailable_total", {"operation": "cache_put"}) == 1
        assert a.redis.is_down
        await a.redis.close()

    async def test_redis_that_stops_and_comes_back(self, redis_server):
        """A live Redis stopped mid-way: misses while down, hits again once restarted and retried."""
        redis_server.flush()
        a = Replica(redis_server.url(), 10_000)
        await a.put(key("k"), 10)
        redis_server.stop()
        try:
            assert await a.cache.get(key("k")) is None
            assert a.redis.is_down
        finally:
            redis_server.start()
        await asyncio.sleep(0.6)  # past the back-off
        await a.put(key("k"), 10)
        assert await a.cache.get(key("k")) is not None
        assert not a.redis.is_down
        await a.redis.close()
