"""The disk spool: every sealed batch Loki has not acknowledged, one fsync'd file each, bounded in bytes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SUFFIX = ".seg"
MEMORY_CACHE_BYTES = 4 * 1024 * 1024
"""Spooled bodies kept in memory for the sender; beyond it they are read back from their files (page cache).

At 16 MiB the shipper's peak RSS on a 1,000,000-line file was 92 MB, at 4 MiB 78 MB (TARGETS.md: under 80),
with the same lines per CPU-second against the anchor (`bench/log_shipper_throughput.py`, BENCHMARKS.md).
"""


@dataclass(slots=True)
class Segment:
    """One spooled batch: `<seq>-<lines>-<created ms>.seg`, so a restart rebuilds the queue from names."""

    seq: int
    path: Path
    size: int
    lines: int
    created: float
    in_flight: bool = False
    body: bytes | None = None
    """Kept in memory while the cache has room, so the sender need not read it back."""


def write_durably(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: temp file, fsync, rename (the caller syncs the folder)."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)


def sync_directory(directory: Path) -> None:
    """Fsync a folder so the renames in it survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A FIFO of segments on disk; when over `max_bytes` the oldest not being pushed are dropped."""

    def __init__(self, directory: Path, max_bytes: int, on_drop: Callable[[Segment], None]) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._on_drop = on_drop
        self._segments: deque[Segment] = deque()
        self._next_seq = 1
        self.bytes = 0
        self._cached = 0
        self._ready = asyncio.Event()

    def open(self) -> None:
        """Create the folder, discard half-written files, and queue the segments a previous run left."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        found = []
        for path in self.directory.glob("*" + SUFFIX):
            segment = _parse_name(path)
            if segment is not None:
                found.append(segment)
        for segment in sorted(found, key=lambda item: item.seq):
            self._segments.append(segment)
            self.bytes += segment.size
        if self._segments:
            self._next_seq = self._segments[-1].seq + 1
            self._ready.set()

    def __len__(self) -> int:
        return len(self._segments)

    @property
    def lines(self) -> int:
        """Lines held."""
        return sum(segment.lines for segment in self._segments)

    def oldest_age(self) -> float:
        """Seconds the oldest unacknowledged segment has waited; 0 when empty (the lag)."""
        return max(0.0, time.time() - self._segments[0].created) if self._segments else 0.0

    def reserve(self, lines: int) -> Segment:
        """Name the next segment (called on the event loop, so sequence numbers stay in order)."""
        seq = self._next_seq
        self._next_seq += 1
        created = time.time()
        path = self.directory / f"{seq:020d}-{lines}-{int(created * 1000)}{SUFFIX}"
        return Segment(seq=seq, path=path, size=0, lines=lines, created=created)

    def append(self, segment: Segment, body: bytes) -> None:
        """Queue a segment already written durably, then drop the oldest while over the bound."""
        segment.size = len(body)
        if self._cached + segment.size <= MEMORY_CACHE_BYTES:
            segment.body = body
            self._cached += segment.size
        self._segments.append(segment)
        self.bytes += segment.size
        self._evict()
        self._ready.set()

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and len(self._segments) > 1:
            victim = next((segment for segment in self._segments if not segment.in_flight), None)
            if victim is None or victim is self._segments[-1]:
                return
            self._segments.remove(victim)
            self.bytes -= victim.size
            self._forget(victim)
            victim.path.unlink(missing_ok=True)
            self._on_drop(victim)

    def take(self, max_bytes: int) -> list[Segment]:
        """The oldest segments not yet being pushed, up to `max_bytes` (at least one), marked in flight."""
        taken: list[Segment] = []
        total = 0
        for segment in self._segments:
            if segment.in_flight:
                continue
            if taken and total + segment.size > max_bytes:
                break
            segment.in_flight = True
            taken.append(segment)
            total += segment.size
        if not taken:
            self._ready.clear()
        return taken

    def read(self, segment: Segment) -> bytes:
        """A segment's body (from memory when cached)."""
        return segment.body if segment.body is not None else segment.path.read_bytes()

    def _forget(self, segment: Segment) -> None:
        if segment.body is not None:
            self._cached -= segment.size
            segment.body = None

    def ack(self, segments: list[Segment]) -> None:
        """Forget segments Loki acknowledged (or that were dropped), deleting their files."""
        for segment in segments:
            with contextlib.suppress(ValueError):
                self._segments.remove(segment)
                self.bytes -= segment.size
                self._forget(segment)
            segment.path.unlink(missing_ok=True)

    def release(self, segments: list[Segment]) -> None:
        """Put segments back to be taken again (a push abandoned at shutdown)."""
        for segment in segments:
            segment.in_flight = False
        self._ready.set()

    async def wait(self) -> None:
        """Until a segment is there to take."""
        await self._ready.wait()


def _parse_name(path: Path) -> Segment | None:
    parts = path.name.removesuffix(SUFFIX).split("-")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    return Segment(seq=int(parts[0]), path=path, size=size, lines=int(parts[1]), created=int(parts[2]) / 1000)
