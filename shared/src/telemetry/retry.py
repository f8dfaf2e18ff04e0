"""Retry timing shared by the log-shipper's pushes to Loki and the services' log forwarder.

Exponential backoff with jitter, and the `Retry-After` header read as seconds (a number or an HTTP date).
"""

from __future__ import annotations

import email.utils
import random
import time


class Backoff:
    """Exponential delays with jitter: `minimum` doubling up to `maximum`, each drawn in [½·d, d]."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0

    def next(self, retry_after: float | None = None) -> float:
        """The delay before the next attempt; an honoured `Retry-After` when the server sent one (capped)."""
        ceiling = min(self.maximum, self.minimum * 2**self.attempt)
        self.attempt += 1
        if retry_after is not None:
            return min(self.maximum, retry_after)
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography

    def reset(self) -> None:
        """After a success."""
        self.attempt = 0


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())
