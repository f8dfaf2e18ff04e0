"""Poll a check until it is satisfied or a deadline passes: arrival in Tempo and Loki is eventual."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Attempt(Generic[T]):
    """One poll's outcome: a value, and whether polling is over (done, or failed for good)."""

    __slots__ = ("done", "value")

    def __init__(self, value: T, *, done: bool) -> None:
        self.value = value
        self.done = done


async def poll_until(
    check: Callable[[], Awaitable[Attempt[T]]], *, deadline: float, interval: float = 0.5
) -> tuple[T, int, float]:
    """Run `check` until done or `deadline` seconds passed: (last value, attempts, seconds waited)."""
    start = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        attempt = await check()
        waited = time.monotonic() - start
        if attempt.done or waited + interval > deadline:
            return attempt.value, attempts, round(waited, 3)
        await asyncio.sleep(interval)
