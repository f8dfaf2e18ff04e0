"""`StdinSource`: pipe mode, lines from file descriptor 0 read by a daemon thread so nothing blocks."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable

from log_shipper.batcher import LogBatcher
from log_shipper.sources.splitter import LineSplitter

CHUNK_BYTES = 256 * 1024
QUEUED_CHUNKS = 8


class StdinSource:
    """Reads chunks from `fd` until end of input; `on_eof` runs once everything read is spooled."""

    def __init__(
        self,
        *,
        batcher: LogBatcher,
        service: str,
        max_line_bytes: int,
        fd: int = 0,
        on_eof: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.batcher = batcher
        self.service = service
        self.fd = fd
        self.on_eof = on_eof
        self.splitter = LineSplitter(max_line_bytes)
        self.finished = False

    async def run(self) -> None:
        """Read until end of input (or cancellation)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUED_CHUNKS)
        # A daemon thread, not the default executor: a blocked read must never hold up shutdown.
        threading.Thread(target=self._read, args=(loop, queue), name="stdin-reader", daemon=True).start()
        while chunk := await queue.get():
            block = self.splitter.feed(chunk)
            if block:
                await self.batcher.add(block, "stdin", self.service)
        last = self.splitter.finish()
        if last:
            await self.batcher.add(last, "stdin", self.service)
        await self.batcher.flush()
        self.finished = True
        if self.on_eof is not None:
            await self.on_eof()

    def _read(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes]) -> None:
        while True:
            try:
                chunk = os.read(self.fd, CHUNK_BYTES)
            except OSError:
                chunk = b""
            try:
                # Waiting on the put is the back-pressure: a slow spool slows the reader, not memory.
                asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
            except (RuntimeError, asyncio.CancelledError):
                return  # the loop is gone: shutting down
            if not chunk:
                return
