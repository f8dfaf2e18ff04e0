"""`FileTailer`: follows globbed files across rotation and truncation, resuming at saved positions."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from log_shipper.batcher import LogBatcher, SpoolWriteError
from log_shipper.positions import Position
from log_shipper.sources.splitter import LineSplitter

CHUNK_BYTES = 1024 * 1024
GLOB_EVERY_SECONDS = 1.0


def parse_file_specs(specs: tuple[str, ...], default_service: str) -> list[tuple[str, str]]:
    """`("gatewayz-api=/logs/api*.log", "/logs/x.log")` as (glob, service of its non-JSON lines) pairs."""
    parsed = []
    for spec in specs:
        service, sep, pattern = spec.partition("=")
        if sep and "/" not in service and "*" not in service:
            parsed.append((pattern.strip(), service.strip() or default_service))
        else:
            parsed.append((spec.strip(), default_service))
    return parsed


@dataclass(slots=True)
class TailedFile:
    """One open file: identity, how far it was read, and how far its lines went to the batcher."""

    path: str
    service: str
    fd: int
    device: int
    inode: int
    offset: int
    splitter: LineSplitter

    @property
    def committed(self) -> int:
        """Offset just past the last complete line handed on."""
        return self.offset - self.splitter.pending


class FileTailer:
    """Polls its globs; reads every file to its end in chunks, then waits `poll` seconds for more."""

    def __init__(
        self,
        *,
        specs: list[tuple[str, str]],
        batcher: LogBatcher,
        saved: dict[str, Position],
        max_line_bytes: int,
        poll: float,
        paused: Callable[[], bool] = lambda: False,
    ) -> None:
        self.specs = specs
        self.paused = paused
        self.batcher = batcher
        self.poll = poll
        self.max_line_bytes = max_line_bytes
        self._saved = saved
        self._files: dict[str, TailedFile] = {}
        self._last_glob = 0.0
        # Files followed to their end after a rotation, by (device, inode): when the glob also matches
        # the rotated name (`app.log` → `app.log.1` under `app.log*`) it is not read a second time.
        self._finished: dict[tuple[int, int], int] = {}

    def checkpoint(self) -> dict[str, Position]:
        """Positions just past the lines handed to the batcher, by path."""
        return {
            path: Position(tailed.device, tailed.inode, tailed.committed)
            for path, tailed in self._files.items()
        }

    async def run(self) -> None:
        """Tail until cancelled."""
        try:
            while True:
                try:
                    progressed = await self._round()
                except SpoolWriteError:
                    progressed = False  # the batcher keeps the lines and logs; read on later
                    await asyncio.sleep(1.0)
                if not progressed:
                    await asyncio.sleep(self.poll)
        finally:
            self.close()

    async def _round(self) -> bool:
        if self.paused():
            return False  # the spool is nearly full: the files wait, they are their own buffer
        if time.monotonic() - self._last_glob >= GLOB_EVERY_SECONDS:
            self.discover()
        progressed = False
        for tailed in list(self._files.values()):
            progressed |= await self.read(tailed)
            if self.paused():
                break
        return progressed

    def discover(self) -> None:
        """Open files newly matched by the globs, resuming where a previous run stopped."""
        self._last_glob = time.monotonic()
        for pattern, service in self.specs:
            # glob.glob, not Path.glob: the patterns are absolute, and Path.glob takes relative ones only.
            for path in sorted(glob.glob(pattern)):  # noqa: PTH207
                if path not in self._files and Path(path).is_file():
                    self._open(path, service)

    def _open(self, path: str, service: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            logger.warning("Cannot open log file", path=path, error=str(exc))
            return
        stat = os.fstat(fd)
        identity = (stat.st_dev, stat.st_ino)
        if any((tailed.device, tailed.inode) == identity for tailed in self._files.values()):
            os.close(fd)  # the same file under another name (a hard link): followed once
            return
        offset = min(self._finished.get(identity, 0), stat.st_size)
        saved = self._saved.pop(path, None)
        if saved is not None and (saved.device, saved.inode) == (stat.st_dev, stat.st_ino):
            # Same file as last time: resume, unless it was truncated meanwhile.
            offset = saved.offset if saved.offset <= stat.st_size else 0
        self._files[path] = TailedFile(
            path=path,
            service=service,
            fd=fd,
            device=stat.st_dev,
            inode=stat.st_ino,
            offset=offset,
            splitter=LineSplitter(self.max_line_bytes),
        )
        logger.info("Tailing log file", path=path, offset=offset)

    async def read(self, tailed: TailedFile) -> bool:
        """Hand on one chunk of new lines; at the end of the file, notice rotation or truncation."""
        if self._files.get(tailed.path) is not tailed:
            return False  # closed after a rotation: its descriptor may already be another file's
        if await self._drain(tailed):
            return True
        return await self._at_end(tailed)

    async def _at_end(self, tailed: TailedFile) -> bool:
        stat = _stat(tailed.path)
        if stat is not None and (stat.st_dev, stat.st_ino) == (tailed.device, tailed.inode):
            if stat.st_size < tailed.offset:
                logger.info("Log file truncated; reading it from the start", path=tailed.path)
                tailed.offset = 0
                tailed.splitter.reset()
                return True
            return False
        if stat is None:
            return False  # moved away and not yet replaced: keep following the old file
        # Rotated: a writer may have appended to the old file just before renaming it, so drain it first.
        if await self._drain(tailed):
            return True
        last = tailed.splitter.finish()
        if last:  # the old file's unterminated last line
            await self.batcher.add(last, "file", tailed.service)
        self._finished[(tailed.device, tailed.inode)] = tailed.offset
        if len(self._finished) > 1000:
            del self._finished[next(iter(self._finished))]
        self._close(tailed)
        logger.info("Log file rotated; following the new file", path=tailed.path)
        self._open(tailed.path, tailed.service)
        return True

    async def _drain(self, tailed: TailedFile) -> bool:
        data = os.pread(tailed.fd, CHUNK_BYTES, tailed.offset)
        if not data:
            return False
        tailed.offset += len(data)
        block = tailed.splitter.feed(data)
        if block:
            await self.batcher.add(block, "file", tailed.service)
        return True

    def _close(self, tailed: TailedFile) -> None:
        with contextlib.suppress(OSError):
            os.close(tailed.fd)
        self._files.pop(tailed.path, None)

    def close(self) -> None:
        """Close every file."""
        for tailed in list(self._files.values()):
            self._close(tailed)


def _stat(path: str) -> os.stat_result | None:
    """The file now at `path` (a local stat: fast enough for the event loop), or None."""
    try:
        return Path(path).stat()
    except FileNotFoundError:
        return None
