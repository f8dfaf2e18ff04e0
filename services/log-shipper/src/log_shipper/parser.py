"""Turns raw log lines into Loki entries: labels, nanosecond timestamps Loki accepts, bounded lines."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec

from log_shipper.batch import Batch, StreamBuffer
from log_shipper.labels import UNKNOWN_LEVEL, StreamLabels

_NS = 1_000_000_000
MAX_AGE_NS = (7 * 24 - 1) * 3600 * _NS
"""Older entries are re-stamped: Loki refuses entries over 7 days old (`timestamp too old`)."""
MAX_AHEAD_NS = 5 * 60 * _NS
"""Entries further ahead than this are re-stamped: Loki refuses them (`timestamp too new`)."""
MAX_BEHIND_NS = 50 * 60 * _NS
"""Within a stream Loki refuses an entry over 1 h behind the newest (`entry too far behind`)."""
ENTRY_OVERHEAD = 32
"""Bytes an entry adds to a push body beyond its line (timestamp, quotes, brackets)."""


class LineHead(msgspec.Struct, gc=False):
    """The fields a JSON line is read for (the rest is skipped unparsed); `log`/`time` are Docker's."""

    timestamp: str | int | float | None = None
    level: str | None = None
    service: str | None = None
    log: str | None = None
    time: str | None = None


class ParseCounts:
    """What a parse call did, for the metrics."""

    __slots__ = ("bytes", "lines", "retimed", "truncated")

    def __init__(self) -> None:
        self.lines = 0
        self.bytes = 0
        self.truncated = 0
        self.retimed = 0


class TimestampParser:
    """RFC 3339 / ISO 8601 text or epoch numbers to Unix nanoseconds; the seconds part is cached."""

    def __init__(self) -> None:
        self._prefix = ""
        self._prefix_ns = 0

    def parse(self, value: str | float) -> int | None:
        """Unix ns, or None when `value` is not a time."""
        if isinstance(value, str):
            return self._parse_text(value)
        if isinstance(value, bool):
            return None
        return _epoch_ns(value)

    def _parse_text(self, text: str) -> int | None:
        # Fast path: `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the shape our services and Docker write.
        if len(text) >= 20 and text[-1] == "Z" and (text[19] == "." or len(text) == 20):
            prefix = text[:19]
            if prefix != self._prefix:
                try:
                    moment = datetime.fromisoformat(prefix).replace(tzinfo=UTC)
                except ValueError:
                    return None
                self._prefix = prefix
                self._prefix_ns = int(moment.timestamp()) * _NS
            fraction = text[20:-1]
            if not fraction:
                return self._prefix_ns
            if not fraction.isdigit():
                return None
            return self._prefix_ns + int(fraction[:9].ljust(9, "0"))
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1000


def _epoch_ns(value: float) -> int:
    """An epoch number in s, ms, µs or ns (guessed by magnitude) as ns."""
    magnitude = abs(value)
    if magnitude >= 1e17:
        return int(value)
    if magnitude >= 1e14:
        return int(value * 1000)
    if magnitude >= 1e11:
        return int(value * 1_000_000)
    return int(value * _NS)


class LineParser:
    """Decodes each line once with a reused msgspec decoder and files it under its stream in a `Batch`."""

    def __init__(self, labels: StreamLabels, max_line_bytes: int) -> None:
        self.labels = labels
        self.max_line_bytes = max_line_bytes
        self._decoder = msgspec.json.Decoder(LineHead)
        self._timestamps = TimestampParser()
        self._newest: dict[tuple[str, str], int] = {}

    def parse(self, block: bytes, default_service: str, batch: Batch) -> ParseCounts:
        """Add the lines of `block` (complete lines joined by newlines) to `batch`; blank ones are skipped."""
        if not block:
            return ParseCounts()
        return self.parse_lines(block.split(b"\n"), default_service, batch)

    def parse_lines(  # noqa: C901 - the per-line loop is inlined on purpose: each call costs
        self, lines: list[bytes], default_service: str, batch: Batch
    ) -> ParseCounts:
        """Add `lines` (without newlines) to `batch` one by one; blank lines are skipped."""
        counts = ParseCounts()
        now = time.time_ns()
        low, high = now - MAX_AGE_NS, now + MAX_AHEAD_NS
        decode = self._decoder.decode
        routes = batch.routes
        limit = self.max_line_bytes
        last_value: object = None
        last_parsed = now
        last_ts = -1
        last_text = ""
        kept = 0
        # The hot loop: one decode, two dict lookups and an append per well-formed line; every rarer
        # case (not JSON, Docker, over-long, odd timestamp) leaves it through `_slow`.
        for raw in lines:
            try:
                head: LineHead = decode(raw)
            except msgspec.DecodeError:
                kept += self._slow(raw, None, default_service, batch, counts, now)
                continue
            if head.log is not None or len(raw) > limit:
                kept += self._slow(raw, head, default_service, batch, counts, now)
                continue
            route = (head.service, head.level, default_service)
            buffer = routes.get(route)
            if buffer is None:
                buffer = self._route(route, batch)
            stamp = head.timestamp
            if stamp != last_value:
                last_value = stamp
                last_parsed = self._time(stamp, now)
            ts = last_parsed
            if ts < low or ts > high:
                ts = now
                counts.retimed += 1
            if ts > buffer.newest:
                buffer.newest = ts
            elif ts < buffer.newest - MAX_BEHIND_NS:
                ts = buffer.newest - MAX_BEHIND_NS
                counts.retimed += 1
            if ts != last_ts:
                last_ts = ts
                last_text = str(ts)
            buffer.values.append((last_text, raw.decode("utf-8", "replace")))
            kept += 1
        self._remember(batch)
        counts.lines = kept
        counts.bytes = sum(map(len, lines))
        if kept:
            batch.lines += kept
            batch.bytes += counts.bytes + ENTRY_OVERHEAD * kept
        return counts

    def _time(self, stamp: str | float | None, now: int) -> int:
        if stamp is None:
            return now
        parsed = self._timestamps.parse(stamp)
        return now if parsed is None else parsed

    def _route(self, route: tuple[str | None, str | None, str], batch: Batch) -> StreamBuffer:
        """The stream buffer for raw (service, level, default service) values, created on first use."""
        raw_service, raw_level, default_service = route
        service = self.labels.service(raw_service, default_service) if raw_service else default_service
        key = (service, self.labels.level(raw_level) if raw_level is not None else UNKNOWN_LEVEL)
        buffer = batch.streams.get(key)
        if buffer is None:
            buffer = StreamBuffer(self.labels.encode(*key), self._newest.get(key, 0))
            batch.streams[key] = buffer
        batch.routes[route] = buffer
        return buffer

    def _remember(self, batch: Batch) -> None:
        for key, buffer in batch.streams.items():
            self._newest[key] = buffer.newest

    def _slow(
        self,
        raw: bytes,
        head: LineHead | None,
        default_service: str,
        batch: Batch,
        counts: ParseCounts,
        now: int,
    ) -> int:
        """A line off the fast path: blank (skipped, 0), not JSON, Docker-wrapped or over the limit."""
        if not raw or raw.isspace():
            return 0
        if head is None:
            text = raw.decode("utf-8", "replace").rstrip("\r")
            head = LineHead()
        elif head.log is not None and head.time is not None:
            head, text = self._unwrap_docker(head)
        else:
            text = raw.decode("utf-8", "replace")
        if len(text) > self.max_line_bytes // 4:
            text, truncated = self._bounded(text)
            counts.truncated += truncated
        buffer = self._route((head.service, head.level, default_service), batch)
        ts = self._time(head.timestamp, now)
        if ts < now - MAX_AGE_NS or ts > now + MAX_AHEAD_NS:
            ts = now
            counts.retimed += 1
        if ts > buffer.newest:
            buffer.newest = ts
        elif ts < buffer.newest - MAX_BEHIND_NS:
            ts = buffer.newest - MAX_BEHIND_NS
            counts.retimed += 1
        buffer.values.append((str(ts), text))
        return 1

    def _unwrap_docker(self, wrapper: LineHead) -> tuple[LineHead, str]:
        """Docker json-file: the line is `log` (without its newline), timed by the inner JSON or `time`."""
        text = (wrapper.log or "").rstrip("\n").rstrip("\r")
        try:
            inner: LineHead = self._decoder.decode(text)
        except msgspec.DecodeError:
            return LineHead(timestamp=wrapper.time), text
        if inner.timestamp is None:
            inner.timestamp = wrapper.time
        return inner, text

    def _bounded(self, text: str) -> tuple[str, int]:
        """`text` cut to the line limit with a marker saying how much was cut; 1 if it was cut."""
        encoded = text.encode()
        if len(encoded) <= self.max_line_bytes:
            return text, 0
        marker = f" …[truncated {len(encoded)} bytes]"
        keep = self.max_line_bytes - len(marker.encode())
        return encoded[:keep].decode("utf-8", "ignore") + marker, 1
