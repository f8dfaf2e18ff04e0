"""A sliding-window limiter per key, bounded in memory: failed logins per client, workloads overall."""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable


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
