"""`LogBatcher`: collects parsed lines and seals them into the spool by size or age, fsync'd, in order."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec

from log_shipper.batch import Batch
from log_shipper.metrics import ShipperMetrics
from log_shipper.parser import LineParser
from log_shipper.positions import Position, Positions
from log_shipper.spool import Segment, Spool, sync_directory, write_durably
from log_shipper.throttle import LogThrottle


class SpoolWriteError(OSError):
    """The spool could not be written; the sealed lines are kept in memory and written later."""


@dataclass(slots=True)
class _Unsaved:
    """A sealed batch (or positions alone) waiting to be written to disk."""

    segment: Segment | None
    body: bytes
    positions: dict[str, Position] | None


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
        self._unsaved: deque[_Unsaved] = deque()
        self._throttle = LogThrottle()

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
            if self._sealed_gen >= target and not self._unsaved:
                return
            await self._seal()

    async def _seal(self) -> None:
        batch, self._batch = self._batch, Batch()
        sealed_gen = self._open_gen
        self._open_gen += 1
        positions = self._checkpoint()
        if batch.lines and self.spool is not None:
            segment = self.spool.reserve(batch.lines)
            body = batch.encode_protobuf() if self.parser.protobuf else batch.encode(self._encoder)
            self._unsaved.append(_Unsaved(segment, body, positions))
        else:
            if batch.lines:
                self.metrics.dropped_by_reason["loki_disabled"].inc(batch.lines)
            if positions is not None:
                self._unsaved.append(_Unsaved(None, b"", positions))
        await self._write_unsaved()
        self._sealed_gen = sealed_gen

    async def _write_unsaved(self) -> None:
        """Persist sealed batches in order; on a disk error keep them (bounded), raise `SpoolWriteError`."""
        while self._unsaved:
            item = self._unsaved[0]
            path = item.segment.path if item.segment is not None else None
            try:
                await asyncio.to_thread(self._persist, path, item.body, item.positions)
            except OSError as exc:
                self._shed_unsaved()
                self._throttle.error(
                    "spool_write",
                    "Cannot write the spool; sealed lines kept in memory and retried",
                    error=str(exc),
                    batches_waiting=len(self._unsaved),
                )
                raise SpoolWriteError(str(exc)) from exc
            self._unsaved.popleft()
            if item.segment is not None and self.spool is not None:
                self.spool.append(item.segment, item.body)

    def _shed_unsaved(self) -> None:
        """While the disk refuses writes, hold at most the spool's bound in memory: drop the oldest."""
        limit = self.spool.max_bytes if self.spool is not None else 0
        while len(self._unsaved) > 1 and sum(len(item.body) for item in self._unsaved) > limit:
            dropped = self._unsaved.popleft()
            if dropped.segment is not None:
                self.metrics.dropped_by_reason["spool_full"].inc(dropped.segment.lines)

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
            while self._batch.lines or self._unsaved:
                delay = self._batch.started + self.wait - time.monotonic()
                if delay > 0 and self._batch.lines:
                    await asyncio.sleep(delay)
                    continue
                try:
                    await self.flush()
                except SpoolWriteError:
                    await asyncio.sleep(1.0)
