"""A tiny time-to-live cache with single flight: concurrent callers share one fetch per key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class TtlCache(Generic[T]):
    """Remembers each key's value for `ttl` seconds; a miss runs the fetch once however many callers wait."""

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._values: dict[str, tuple[float, T]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str, fetch: Callable[[], Awaitable[T]]) -> T:
        """The cached value for `key`, fetched when absent or older than `ttl`."""
        cached = self._fresh(key)
        if cached is not None:
            return cached[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._fresh(key)
            if cached is not None:
                return cached[1]
            value = await fetch()
            self._values[key] = (self._clock(), value)
            return value

    def _fresh(self, key: str) -> tuple[float, T] | None:
        cached = self._values.get(key)
        if cached is not None and self._clock() - cached[0] < self.ttl:
            return cached
        return None
