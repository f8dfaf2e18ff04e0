"""Each provider's recent calls over a rolling window: availability, error rate, mean response time."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class ProviderHealth:
    """Outcomes of one provider's calls within the last `window` seconds, with running totals."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._calls: deque[tuple[float, bool, float]] = deque()
        self._failures = 0
        self._seconds = 0.0

    def record(self, *, ok: bool, seconds: float) -> None:
        """Note one finished call."""
        self._calls.append((self._clock(), ok, seconds))
        self._failures += not ok
        self._seconds += seconds
        self._evict()

    def _evict(self) -> None:
        horizon = self._clock() - self._window
        calls = self._calls
        while calls and calls[0][0] < horizon:
            _, ok, seconds = calls.popleft()
            self._failures -= not ok
            self._seconds -= seconds
        if not calls:
            self._seconds = 0.0  # drop accumulated float error whenever the window empties

    def availability(self) -> float:
        """1 when the provider answered in the window or was not called in it; 0 when every call failed."""
        self._evict()
        return 0.0 if self._calls and self._failures == len(self._calls) else 1.0

    def error_rate(self) -> float:
        """Failed share of the window's calls (0 with none)."""
        self._evict()
        return self._failures / len(self._calls) if self._calls else 0.0

    def response_time(self) -> float:
        """Mean seconds of the window's calls (0 with none)."""
        self._evict()
        return self._seconds / len(self._calls) if self._calls else 0.0

    @property
    def available(self) -> bool:
        """Whether the router should prefer this provider."""
        return self.availability() == 1.0
