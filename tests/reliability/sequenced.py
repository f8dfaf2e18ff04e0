"""Sequence-numbered log lines, and a fake Loki that counts how often each number arrived."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from support.fake_loki import FakeLoki

PREFIX = '{"seq":'
PADDING = "x" * 40


def line(seq: int) -> str:
    """One JSON log line carrying `seq`, timestamped now, about 160 bytes."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return (
        f'{PREFIX}{seq},"timestamp":"{now}","level":"INFO","service":"reliability",'
        f'"message":"sequenced line {seq} {PADDING}"}}\n'
    )


def seq_of(text: str) -> int | None:
    """The sequence number of a line made by `line`, else None."""
    if not text.startswith(PREFIX):
        return None
    return int(text[len(PREFIX) : text.index(",", len(PREFIX))])


class CountingLoki(FakeLoki):
    """The strict fake Loki, counting arrivals per sequence number, duplicates included.

    The fake de-duplicates on (timestamp, line) like Loki, which would hide a re-sent batch; here every
    accepted entry is counted, then dropped from memory so a million lines cost a million bytes.
    """

    def __init__(self, total: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen = bytearray(total)
        self.foreign = 0

    def _store(self, streams: list[tuple[dict[str, str], list[list[Any]]]]) -> list[str]:
        errors = super()._store(streams)
        if not errors:
            seen = self.seen
            for _, values in streams:
                for value in values:
                    seq = seq_of(value[1])
                    if seq is None or seq >= len(seen):
                        self.foreign += 1
                    elif seen[seq] < 255:
                        seen[seq] += 1
        for stream in self._streams.values():
            stream.entries.clear()
        return errors

    def missing(self) -> int:
        """Sequence numbers never received."""
        return self.seen.count(0)

    def duplicates(self) -> int:
        """Arrivals beyond the first, over all numbers."""
        with self._lock:
            return sum(self.seen) - (len(self.seen) - self.seen.count(0))

    def largest_push(self) -> int:
        """Entries in the largest accepted push: the size of "one batch"."""
        with self._lock:
            return max((push.entries for push in self.pushes if push.status == 204), default=0)


class LineWriter(threading.Thread):
    """Appends `total` sequenced lines to `path` at about `rate` lines a second, in small chunks."""

    def __init__(self, path: Path, total: int, rate: float, chunk: int = 100) -> None:
        super().__init__(name="line-writer", daemon=True)
        self.path = path
        self.total = total
        self.rate = rate
        self.chunk = chunk
        self.written = 0
        self.stop_requested = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        with self.path.open("a", encoding="utf-8") as out:
            while self.written < self.total and not self.stop_requested.is_set():
                end = min(self.total, self.written + self.chunk)
                out.write("".join(line(seq) for seq in range(self.written, end)))
                out.flush()
                self.written = end
                delay = started + self.written / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
