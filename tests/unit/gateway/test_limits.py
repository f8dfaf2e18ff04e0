"""Per-key rpm/tpm token buckets: in-process (a clock moved by hand) and in Redis (Debian's redis-server,
private), shared by two "replicas", atomic under concurrency, falling back per replica when Redis is down."""

from __future__ import annotations

import asyncio
import math

import pytest
from gateway_testing import Clock
from prometheus_client import CollectorRegistry

from gateway.limits import Bucket, InProcessLimiter, duration
from gateway.redis_limits import RedisLimiter
from gateway.store import ApiKey
from support.processes import free_port
from telemetry.shared_redis import SharedRedis

pytestmark = pytest.mark.anyio


def key(key_id: int = 7, rpm: int | None = None, tpm: int | None = None) -> ApiKey:
    return ApiKey(id=key_id, user_id=1, alias="k", rpm=rpm, tpm=tpm)


@pytest.fixture
def redis_url(redis_server):
    redis_server.flush()
    return redis_server.url()


class TestBucket:
    def test_remaining_reset_and_wait(self):
        """60 rpm with 30.5 left: 30 remaining, full in 29.5 s, one more fits now; 61 never fits."""
        bucket = Bucket(60, 30.5)
        assert bucket.remaining == 30
        assert bucket.reset_seconds == pytest.approx(29.5)
        assert bucket.wait_for(1) == 0.0
        assert bucket.wait_for(40) == pytest.approx(9.5)
        assert math.isinf(bucket.wait_for(61))
        assert Bucket(60, -2.0).remaining == 0

    def test_durations_as_openai_writes_them(self):
        """Reset times look like OpenAI's: 20ms, 1s, 1.5s, 6m0s."""
        assert [duration(s) for s in (0.02, 1.0, 1.5, 360.0, 61.25)] == [
            "20ms",
            "1s",
            "1.5s",
            "6m0s",
            "1m1.25s",
        ]


class TestInProcess:
    async def test_rpm_admits_the_bucket_then_refills_continuously(self):
        """rpm 3: three at once, the fourth refused with a 20 s wait; 20 s later one more fits."""
        clock = Clock(100.0)
        limiter = InProcessLimiter(clock)
        limited = key(rpm=3)
        decisions = [await limiter.acquire(limited, 0) for _ in range(4)]
        assert [d.admitted for d in decisions] == [True, True, True, False]
        refused = decisions[-1]
        assert refused.exceeded == "requests"
        assert refused.retry_after == pytest.approx(20.0)
        assert refused.requests.remaining == 0
        assert decisions[0].requests.remaining == 2
        assert decisions[0].requests.reset_seconds == pytest.approx(20.0)
        clock.now += 20.0
        assert (await limiter.acquire(limited, 0)).admitted
        assert not (await limiter.acquire(limited, 0)).admitted

    async def test_tpm_takes_the_worst_case_and_unused_tokens_come_back(self):
        """tpm 100: a 60-token worst case fits once; 40 unused come back, so a second one fits."""
        limiter = InProcessLimiter(Clock())
        limited = key(tpm=100)
        first = await limiter.acquire(limited, 60)
        assert first.admitted
        assert first.tokens.remaining == 40
        second = await limiter.acquire(limited, 60)
        assert not second.admitted
        assert second.exceeded == "tokens"
        assert second.retry_after == pytest.approx(12.0)  # 20 tokens short at 100 per minute
        limiter.give_back(limited, 40, shared=False)
        assert (await limiter.acquire(limited, 60)).admitted

    async def test_a_refusal_takes_nothing_from_either_bucket(self):
        """Over tpm, the request bucket keeps its unit: both are taken together or not at all."""
        limiter = InProcessLimiter(Clock())
        limited = key(rpm=10, tpm=50)
        refused = await limiter.acquire(limited, 80)
        assert not refused.admitted
        assert refused.requests.remaining == 10
        assert math.isinf(refused.retry_after)
        assert (await limiter.peek(limited)).tokens.remaining == 50

    async def test_unlimited_keys_have_no_buckets(self):
        """A key without rpm/tpm is always admitted and keeps no state."""
        limiter = InProcessLimiter(Clock())
        decision = await limiter.acquire(key(), 10**9)
        assert decision.admitted
        assert (decision.requests, decision.tokens) == (None, None)
        assert limiter._buckets == {}

    async def test_idle_buckets_are_forgotten(self):
        """Buckets untouched for a minute are full again and pruned, so memory follows active keys only."""
        clock = Clock()
        limiter = InProcessLimiter(clock)
        for key_id in range(5000):
            await limiter.acquire(key(key_id, rpm=5), 0)
            clock.now += 0.1
        assert len(limiter._buckets) < 5000


class TestRedis:
    async def test_two_replicas_share_the_buckets(self, redis_url):
        """Replicas A and B take from one bucket: rpm 5 across both, and the same remaining count."""
        a = RedisLimiter(SharedRedis(redis_url, CollectorRegistry()))
        b = RedisLimiter(SharedRedis(redis_url, CollectorRegistry()))
        limited = key(rpm=5, tpm=1000)
        results = [await (a, b)[i % 2].acquire(limited, 10) for i in range(7)]
        assert [r.admitted for r in results] == [True] * 5 + [False] * 2
        assert all(r.shared for r in results)
        assert results[4].requests.remaining == 0
        assert results[4].tokens.remaining == 950
        assert results[5].retry_after == pytest.approx(12.0, abs=0.5)

    async def test_concurrent_acquisitions_never_exceed_the_limit(self, redis_url):
        """200 acquisitions at once from 4 clients against rpm 30: exactly 30 (the Lua script is atomic).

        A generous client timeout: 200 connections opened at once on a loaded machine can take longer than
        the gateway's 0.5 s, and a timed-out call is decided by the replica's own buckets (Redis "down").
        """
        limiters = [RedisLimiter(SharedRedis(redis_url, CollectorRegistry(), timeout=10)) for _ in range(4)]
        limited = key(rpm=30)
        results = await asyncio.gather(*(limiters[i % 4].acquire(limited, 0) for i in range(200)))
        assert all(r.shared for r in results)
        assert sum(r.admitted for r in results) == 30

    async def test_tokens_given_back_with_the_next_acquisition(self, redis_url):
        """Unused tokens are owed to the shared bucket and go back with the key's next request (one round
        trip per request), once; an overrun is taken the same way."""
        limiter = RedisLimiter(SharedRedis(redis_url, CollectorRegistry()))
        limited = key(tpm=100)
        assert (await limiter.acquire(limited, 90)).admitted
        limiter.give_back(limited, 80, shared=True)
        assert (await limiter.peek(limited)).tokens.remaining == 90  # counted in, not stored by a peek
        second = await limiter.acquire(limited, 90)
        assert second.admitted
        assert second.tokens.remaining <= 1
        limiter.give_back(limited, -50, shared=True)  # the call used 50 more than its worst case
        refused = await limiter.acquire(limited, 1)
        assert not refused.admitted
        assert refused.tokens.level < 0

    async def test_redis_down_falls_back_to_this_replica(self):
        """Nothing listening: decisions come from the in-process buckets (the limit still holds per
        replica), counted in redis_unavailable_total{operation="rate_limit"}."""
        registry = CollectorRegistry()
        limiter = RedisLimiter(
            SharedRedis(f"redis://127.0.0.1:{free_port()}/0", registry, timeout=0.2, retry_seconds=30)
        )
        limited = key(rpm=2)
        results = [await limiter.acquire(limited, 0) for _ in range(3)]
        assert [r.admitted for r in results] == [True, True, False]
        assert not any(r.shared for r in results)
        assert registry.get_sample_value("redis_unavailable_total", {"operation": "rate_limit"}) == 3


class TestChangedLimits:
    async def test_a_raised_limit_applies_at_once_and_a_lowered_one_makes_the_key_wait(self):
        """rpm 1 used up; raised to 5 the key has 4 more now; lowered to 2 it waits until its use is under."""
        clock = Clock()
        limiter = InProcessLimiter(clock)
        assert (await limiter.acquire(key(rpm=1), 0)).admitted
        assert not (await limiter.acquire(key(rpm=1), 0)).admitted
        assert [(await limiter.acquire(key(rpm=5), 0)).admitted for _ in range(5)] == [True] * 4 + [False]
        lowered = await limiter.acquire(key(rpm=2), 0)
        assert not lowered.admitted
        assert lowered.retry_after == pytest.approx(120.0)  # 5 used, decaying at 2 a minute, to 1

    async def test_same_on_redis(self, redis_url):
        """The Redis buckets keep the use too: a raised limit applies at once."""
        limiter = RedisLimiter(SharedRedis(redis_url, CollectorRegistry()))
        assert (await limiter.acquire(key(rpm=1), 0)).admitted
        assert not (await limiter.acquire(key(rpm=1), 0)).admitted
        assert (await limiter.acquire(key(rpm=3), 0)).admitted
