"""SlidingWindowLimiter: per-key windows, retry-after, bounded memory."""

from __future__ import annotations

from admin.limiter import SlidingWindowLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestSlidingWindowLimiter:
    def test_allows_limit_then_refuses_until_window_passes(self):
        """`limit` events pass; the next waits until the oldest leaves the window."""
        clock = FakeClock()
        limiter = SlidingWindowLimiter(3, 60, clock=clock)
        assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 0]
        clock.now += 20
        assert limiter.acquire("a") == 40
        clock.now += 40
        assert limiter.acquire("a") == 0

    def test_keys_are_independent(self):
        """One key's events do not count against another's."""
        limiter = SlidingWindowLimiter(1, 60, clock=FakeClock())
        limiter.hit("a")
        assert limiter.retry_after("a") > 0
        assert limiter.retry_after("b") == 0

    def test_lookups_do_not_grow_memory_and_keys_are_bounded(self):
        """Asking about a key stores nothing; past `max_keys` the least recent key is forgotten."""
        limiter = SlidingWindowLimiter(1, 60, max_keys=2, clock=FakeClock())
        for key in ("x", "y", "z"):
            limiter.retry_after(key)
        assert len(limiter._events) == 0
        for key in ("a", "b", "c"):
            limiter.hit(key)
        assert list(limiter._events) == ["b", "c"]
