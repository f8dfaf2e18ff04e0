"""Turns raw log lines into Loki entries: labels, nanosecond timestamps Loki accepts, bounded lines."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec

from log_shipper.batch import Batch, StreamBuffer
from log_shipper.labels import StreamLabels

_NS = 1_000_000_000
MAX_AGE_NS = (7 * 24 - 1) * 3600 * _NS
"""Older entries are re-stamped: Loki refuses entries over 7 days old (`timestamp too old`)."""
MAX_AHEAD_NS = 5 * 60 * _NS
"""Entries further ahead than this are re-stamped: Loki refuses them (`timestamp too new`)."""
MAX_BEHIND_NS = 50 * 60 * _NS
"""Within a stream Loki refuses an entry over 1 h behind the newest (`entry too far behind`)."""
ENTRY_OVERHEAD = 32
"""Bytes an entry adds to a push body beyond its line (timestamp, quotes, brackets)."""


class LineHead(msgspec.Struct):
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

    def parse(  # noqa: C901, PLR0912, PLR0915 - the per-line hot loop is inlined on purpose: calls cost
        self, lines: list[bytes], default_service: str, batch: Batch
    ) -> ParseCounts:
        """Add `lines` (without newlines) to `batch`; blank lines are skipped."""
        counts = ParseCounts()
        now = time.time_ns()
        low, high = now - MAX_AGE_NS, now + MAX_AHEAD_NS
        decode = self._decoder.decode
        parse_time = self._timestamps.parse
        labels = self.labels
        streams = batch.streams
        quick_limit = self.max_line_bytes // 4
        last_value: object = None
        last_parsed = now
        last_ts = -1
        last_text = ""
        total = 0
        for raw in lines:
            if not raw or raw.isspace():
                continue
            total += len(raw)
            try:
                head: LineHead | None = decode(raw)
            except msgspec.DecodeError:
                head = None
            if head is None:
                text = raw.decode("utf-8", "replace").rstrip("\r")
                service, level, stamp = default_service, "unknown", None
            else:
                if head.log is not None and head.time is not None:
                    head, text = self._unwrap_docker(head)
                else:
                    text = raw.decode("utf-8", "replace")
                service = labels.service(head.service, default_service) if head.service else default_service
                level = labels.level(head.level)
                stamp = head.timestamp
            if len(text) > quick_limit:
                text, truncated = self._bounded(text)
                counts.truncated += truncated
            if stamp is None:
                ts = now
            elif stamp == last_value:
                ts = last_parsed
            else:
                parsed = parse_time(stamp)
                ts = last_parsed = now if parsed is None else parsed
                last_value = stamp
            if ts < low or ts > high:
                ts = now
                counts.retimed += 1
            key = (service, level)
            buffer = streams.get(key)
            if buffer is None:
                buffer = StreamBuffer(labels.encode(service, level), self._newest.get(key, 0))
                streams[key] = buffer
            if ts > buffer.newest:
                buffer.newest = ts
            elif ts < buffer.newest - MAX_BEHIND_NS:
                ts = buffer.newest - MAX_BEHIND_NS
                counts.retimed += 1
            if ts != last_ts:
                last_ts = ts
                last_text = str(ts)
            buffer.values.append((last_text, text))
            counts.lines += 1
        for key, buffer in streams.items():
            self._newest[key] = buffer.newest
        counts.bytes = total
        if counts.lines:
            batch.lines += counts.lines
            batch.bytes += total + ENTRY_OVERHEAD * counts.lines
        return counts

    def _unwrap_docker(self, wrapper: LineHead) -> tuple[LineHead, str]:
        """Docker json-file: the line is `log` (without its newline), timed by the inner JSON or `time`."""
        text = (wrapper.log or "").rstrip("\n").rstrip("\r")
        try:
            inner: LineHead = self._decoder.decode(text)
        except msgspec.DecodeError:
            return LineHead(timestamp=wrapper.time, level=None, service=None), text
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
