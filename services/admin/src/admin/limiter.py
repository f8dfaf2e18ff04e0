"""A sliding-window limiter per key, bounded in memory: failed logins per client, workloads overall.

`SharedWindow` keeps the same window in Redis when `REDIS_URL` is set, so every admin replica counts the
same failures (two replicas do not double an attacker's tries); while Redis is down each replica falls back
to its own in-process window, which always records the events too.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from telemetry.redis_window import RedisSlidingWindow
    from telemetry.shared_redis import SharedRedis


class SlidingWindowLimiter:
    """Allows `limit` events per `window` seconds for each key; remembers at most `max_keys` keys."""

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may act again; 0 when it may act now."""
        events = self._prune(key)
        if len(events) < self.limit:
            return 0
        return max(1, math.ceil(events[0] + self.window - self._clock()))

    def hit(self, key: str) -> None:
        """Record one event for `key`."""
        events = self._prune(key)
        events.append(self._clock())
        self._events[key] = events
        self._events.move_to_end(key)
        while len(self._events) > self.max_keys:
            # Forget the least recently active client first; an attacker rotating addresses gains nothing
            # over one that does not, since each address still gets only `limit` tries a window.
            self._events.popitem(last=False)

    def acquire(self, key: str) -> int:
        """Record an event and return 0 if allowed, else record nothing and return the wait in seconds."""
        wait = self.retry_after(key)
        if wait == 0:
            self.hit(key)
        return wait

    def _prune(self, key: str) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            # Not stored until `hit`: looking a client up must not grow the table.
            return deque()
        horizon = self._clock() - self.window
        while events and events[0] <= horizon:
            events.popleft()
        return events


class SharedWindow:
    """`SlidingWindowLimiter`'s window: in Redis when there is one, else (or while it is down) in process."""

    def __init__(
        self, local: SlidingWindowLimiter, redis: SharedRedis | None, *, prefix: str, operation: str
    ) -> None:
        self.local = local
        self.limit = local.limit
        self._redis = redis
        self._operation = operation
        self._remote: RedisSlidingWindow | None = None
        self._errors: tuple[type[BaseException], ...] = ()
        if redis is not None:
            # Imported only with REDIS_URL: redis-py costs ~20 MB of RSS and ~0.6 s of start-up.
            from telemetry.redis_window import RedisSlidingWindow  # noqa: PLC0415
            from telemetry.shared_redis import REDIS_ERRORS  # noqa: PLC0415

            self._remote = RedisSlidingWindow(redis, prefix, local.limit, local.window)
            self._errors = REDIS_ERRORS

    async def retry_after(self, key: str) -> int:
        """Seconds until `key` may act again (0: now), counted across replicas when Redis answers."""
        if self._remote is not None and self._redis is not None and self._redis.available(self._operation):
            try:
                wait = await self._remote.retry_after(key)
            except self._errors as exc:
                self._redis.failure(self._operation, exc)
            else:
                self._redis.success()
                return wait
        return self.local.retry_after(key)

    async def hit(self, key: str) -> None:
        """Record one event for `key`, here and (when it answers) in Redis."""
        self.local.hit(key)
        if self._remote is not None and self._redis is not None and self._redis.available(self._operation):
            try:
                await self._remote.hit(key)
            except self._errors as exc:
                self._redis.failure(self._operation, exc)
            else:
                self._redis.success()
