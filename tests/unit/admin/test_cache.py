"""TtlCache: single flight for concurrent callers, expiry after the TTL."""

from __future__ import annotations

import asyncio

import pytest

from admin.cache import TtlCache


@pytest.fixture
def anyio_backend():
    return "asyncio"


class TestTtlCache:
    @pytest.mark.anyio
    async def test_concurrent_misses_fetch_once(self):
        """Ten concurrent callers of a cold key share one fetch."""
        calls = 0

        async def fetch() -> int:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return calls

        cache: TtlCache[int] = TtlCache(10)
        results = await asyncio.gather(*(cache.get("k", fetch) for _ in range(10)))
        assert results == [1] * 10
        assert calls == 1

    @pytest.mark.anyio
    async def test_value_expires_after_ttl(self):
        """After the TTL the next call fetches again."""
        now = [0.0]
        cache: TtlCache[float] = TtlCache(5, clock=lambda: now[0])

        async def fetch() -> float:
            return now[0]

        assert await cache.get("k", fetch) == 0.0
        now[0] = 4.9
        assert await cache.get("k", fetch) == 0.0
        now[0] = 5.0
        assert await cache.get("k", fetch) == 5.0
