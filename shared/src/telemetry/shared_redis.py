"""Redis shared by a service's replicas (`REDIS_URL`), and what a Redis outage does: degrade, never fail.

`SharedRedis` holds one redis-py asyncio client with short timeouts and no retries of its own, and a lean
pipelined client (`telemetry.resp`) for the script calls made on every request. Callers ask
`available()` first and report each `failure()`: while Redis is down every caller takes its fallback (the
gateway skips its cache, admin limits failed logins per replica), the skipped and failed operations are
counted in `redis_unavailable_total{operation}`, one warning is logged per interval, and Redis is tried again
after `retry_seconds` — so a Redis that black-holes packets costs one timeout per interval, not one per
request. The first success after an outage logs that Redis is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from telemetry.loop_metrics import CounterChild, LoopCounter
from telemetry.resp import RespClient
from telemetry.throttle import LogThrottle

REDIS_ERRORS: Final = (RedisError, OSError, TimeoutError)
"""What a Redis call raises when Redis is unreachable, slow or refusing (redis-py wraps socket errors)."""
_KIND = "redis"


class SharedRedis:
    """A service's Redis client plus the outage policy above; used from the event loop only."""

    def __init__(
        self,
        url: str,
        registry: CollectorRegistry,
        *,
        timeout: float = 0.5,
        retry_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        self.lean = RespClient(url, timeout)
        """The same Redis for the per-request script calls (`telemetry.resp`: cheaper than redis-py)."""
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._down_until = 0.0
        self._down = False
        self._log = LogThrottle(10.0)
        self._unavailable = LoopCounter(
            "redis_unavailable",
            "Operations that did not reach Redis (failed, or skipped while Redis was down), by operation.",
            ["operation"],
            registry,
        )
        self._children: dict[str, CounterChild] = {}

    def _count(self, operation: str) -> None:
        child = self._children.get(operation)
        if child is None:
            child = self._children[operation] = self._unavailable.labels(operation)
        child.inc()

    def available(self, operation: str) -> bool:
        """False (and counted) while Redis is in its back-off after a failure; callers then fall back."""
        if self._down and self._clock() < self._down_until:
            self._count(operation)
            return False
        return True

    def failure(self, operation: str, exc: BaseException) -> None:
        """Redis failed `operation`: count it, log at most once per interval, back off for `retry_seconds`."""
        self._count(operation)
        self._down = True
        self._down_until = self._clock() + self.retry_seconds
        self._log.warning(
            _KIND,
            "Redis unavailable; degraded until it answers",
            operation=operation,
            error=f"{type(exc).__name__}: {exc}"[:300],
            retry_seconds=self.retry_seconds,
        )

    def success(self) -> None:
        """An operation went through: leave the outage (logged once) if there was one."""
        if self._down:
            self._down = False
            self._log.recovered(_KIND, "Redis reachable again")

    @property
    def is_down(self) -> bool:
        """Whether the last operation failed (for `/ready` bodies)."""
        return self._down

    async def ping(self) -> bool:
        """One PING within the timeout; True when Redis answered."""
        if not self.available("ping"):
            return False
        try:
            await self.client.ping()
        except REDIS_ERRORS as exc:
            self.failure("ping", exc)
            return False
        self.success()
        return True

    async def close(self) -> None:
        """Close the clients' connections."""
        self.lean.close()
        await self.client.aclose()
