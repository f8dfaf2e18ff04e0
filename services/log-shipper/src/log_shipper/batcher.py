"""`LogBatcher`: collects parsed lines and seals them into the spool by size or age, fsync'd, in order."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Protocol

import msgspec

from log_shipper.batch import Batch
from log_shipper.metrics import ShipperMetrics
from log_shipper.parser import LineParser
from log_shipper.positions import Position, Positions
from log_shipper.spool import Spool, sync_directory, write_durably


class Checkpointed(Protocol):
    """A source whose read positions are saved after the batch holding its lines is on disk."""

    def checkpoint(self) -> dict[str, Position]:
        """Positions covering exactly the lines handed to the batcher so far."""
        ...


class LogBatcher:
    """Seals the open batch at `batch_bytes`, when its oldest line has waited `wait`, or on demand."""

    def __init__(
        self,
        *,
        parser: LineParser,
        spool: Spool | None,
        positions: Positions | None,
        metrics: ShipperMetrics,
        batch_bytes: int,
        wait: float,
    ) -> None:
        self.parser = parser
        self.spool = spool
        self.positions = positions
        self.metrics = metrics
        self.batch_bytes = batch_bytes
        self.wait = wait
        self._batch = Batch()
        self._open_gen = 1
        self._sealed_gen = 0
        self._lock = asyncio.Lock()
        self._encoder = msgspec.json.Encoder()
        self._sources: list[Checkpointed] = []
        self._wake = asyncio.Event()
        self._saved: dict[str, Position] | None = None

    def watch(self, source: Checkpointed) -> None:
        """Save `source`'s positions with every sealed batch."""
        self._sources.append(source)

    @property
    def pending_lines(self) -> int:
        """Lines read but not sealed yet."""
        return self._batch.lines

    async def add(self, block: bytes, source: str, default_service: str) -> int:
        """Parse a block of lines into the open batch; seals (and waits) when it is full. The generation."""
        batch = self._batch
        was_empty = batch.lines == 0
        counts = self.parser.parse(block, default_service, batch)
        metrics = self.metrics
        if counts.lines:
            metrics.read_by_source[source].inc(counts.lines)
            metrics.bytes_by_source[source].inc(counts.bytes)
            if counts.truncated:
                metrics.truncated.inc(counts.truncated)
            if counts.retimed:
                metrics.retimed.inc(counts.retimed)
            if was_empty:
                batch.started = time.monotonic()
                self._wake.set()
        generation = self._open_gen
        if batch.bytes >= self.batch_bytes:
            await self.flush(generation)
        return generation

    async def flush(self, generation: int | None = None) -> None:
        """Seal everything added up to `generation` (default: now) and return once it is durable."""
        target = self._open_gen if generation is None else generation
        async with self._lock:
            if self._sealed_gen >= target:
                return
            await self._seal()

    async def _seal(self) -> None:
        batch, self._batch = self._batch, Batch()
        sealed_gen = self._open_gen
        self._open_gen += 1
        positions = self._checkpoint()
        if batch.lines and self.spool is not None:
            segment = self.spool.reserve(batch.lines)
            body = batch.encode(self._encoder)
            await asyncio.to_thread(self._persist, segment.path, body, positions)
            self.spool.append(segment, body)
        else:
            if batch.lines:
                self.metrics.dropped_by_reason["loki_disabled"].inc(batch.lines)
            if positions is not None:
                await asyncio.to_thread(self._persist, None, b"", positions)
        self._sealed_gen = sealed_gen

    def _checkpoint(self) -> dict[str, Position] | None:
        if self.positions is None or not self._sources:
            return None
        positions: dict[str, Position] = {}
        for source in self._sources:
            positions.update(source.checkpoint())
        if positions == self._saved:
            return None
        self._saved = positions
        return positions

    def _persist(self, segment_path: Path | None, body: bytes, positions: dict[str, Position] | None) -> None:
        """Worker thread: the segment first, then the positions it covers, then the folder."""
        if segment_path is not None:
            write_durably(segment_path, body)
        if positions is not None and self.positions is not None:
            self.positions.save(positions)
        folder = segment_path.parent if segment_path is not None else None
        if folder is None and self.positions is not None:
            folder = self.positions.path.parent
        if folder is not None:
            sync_directory(folder)

    async def run(self) -> None:
        """Seal batches whose oldest line has waited `wait` (runs until cancelled)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._batch.lines:
                delay = self._batch.started + self.wait - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                await self.flush()
