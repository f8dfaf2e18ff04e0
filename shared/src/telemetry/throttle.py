"""Warning and error lines at most once per interval per kind.

So the log-shipper tailing its own output cannot loop, and a database or Redis outage writes one line per
interval rather than one per request.
"""

from __future__ import annotations

import time

from loguru import logger


class LogThrottle:
    """Writes the first line of a kind, then at most one per `interval` with how many were held back."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def error(self, kind: str, message: str, **fields: object) -> None:
        """Log `message` at ERROR unless a line of this `kind` was written within the interval."""
        self._log("ERROR", kind, message, fields)

    def warning(self, kind: str, message: str, **fields: object) -> None:
        """The same at WARNING."""
        self._log("WARNING", kind, message, fields)

    def recovered(self, kind: str, message: str, **fields: object) -> None:
        """Log `message` at INFO if a line of this `kind` was written before, and start the kind afresh."""
        if self._last.pop(kind, None) is not None:
            held = self._held.pop(kind, 0)
            logger.info(message, **fields, similar_suppressed=held)

    def _log(self, level: str, kind: str, message: str, fields: dict[str, object]) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -self.interval) < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        logger.log(level, message, **fields, similar_suppressed=held)
