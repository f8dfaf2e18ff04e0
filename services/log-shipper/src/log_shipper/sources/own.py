"""The shipper's own log lines (`SHIPPER_OWN_LOGS=true`), handed by telemetry's forwarder to its own batcher.

Where nothing reads the shipper's stdout (Railway), this is how its lines reach Loki. In-process rather
than over its own `/ingest`: a POST would write an access line, which would be forwarded, which would be
another POST — one line a second for ever. The forwarder's thread hands each batch to the event loop and
waits for it to be spooled (fsync'd), the same ack `/ingest` gives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Sequence

from log_shipper.batcher import LogBatcher, SpoolWriteError
from telemetry.delivery import Delivery, Outcome

SOURCE = "own"
"""The `source` label of these lines on `log_shipper_lines_read_total`."""


class OwnLogTransport:
    """A `ForwardTransport` into the batcher; `bind(loop)` once the event loop runs."""

    def __init__(self, batcher: LogBatcher, service: str) -> None:
        self._batcher = batcher
        self._service = service
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bound = threading.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the batcher runs on."""
        self._loop = loop
        self._bound.set()

    def send(self, lines: Sequence[bytes], timeout: float) -> Delivery:
        """Spool `lines` through the batcher, waiting at most `timeout` for the fsync."""
        if not self._bound.wait(timeout) or self._loop is None:
            return Delivery(Outcome.RETRY, "connection", detail="the event loop is not running yet")
        block = b"".join(lines).rstrip(b"\n")
        try:
            future = asyncio.run_coroutine_threadsafe(self._spool(block), self._loop)
        except RuntimeError as exc:  # the loop has closed
            return Delivery(Outcome.RETRY, "connection", detail=str(exc))
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return Delivery(Outcome.RETRY, "timeout")
        except SpoolWriteError as exc:
            return Delivery(Outcome.RETRY, "5xx", detail=f"spool: {exc}")
        return Delivery(Outcome.ACKED, "200")

    async def _spool(self, block: bytes) -> None:
        generation = await self._batcher.add(block, SOURCE, self._service)
        await self._batcher.flush(generation)

    def close(self) -> None:
        """Nothing to release."""
