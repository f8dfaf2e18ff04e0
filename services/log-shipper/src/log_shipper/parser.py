"""Turns raw log lines into Loki entries: labels, nanosecond timestamps Loki accepts, bounded lines."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import islice
from operator import itemgetter

import msgspec

from log_shipper import logproto
from log_shipper.batch import Batch, Entry, StreamBuffer
from log_shipper.labels import UNKNOWN_LEVEL, StreamLabels

_NS = 1_000_000_000
MAX_AGE_NS = (7 * 24 - 1) * 3600 * _NS
"""Older entries are re-stamped: Loki refuses entries over 7 days old (`timestamp too old`)."""
MAX_AHEAD_NS = 5 * 60 * _NS
"""Entries further ahead than this are re-stamped: Loki refuses them (`timestamp too new`)."""
MAX_BEHIND_NS = 50 * 60 * _NS
"""Within a stream Loki refuses an entry over 1 h behind the newest (`entry too far behind`)."""
BLANK = " \t\r\x0b\x0c"
"""What a blank line may hold (ASCII whitespace, as `bytes.isspace`); Unicode spaces are content."""
ENTRY_OVERHEAD = 32
"""Bytes an entry adds to a push body beyond its line (timestamp, quotes, brackets)."""
FAST_LINE_BYTES = 4000
"""Longer lines take the slow path when encoding protobuf (its length tables stop at 4,096)."""


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

    def __init__(self, labels: StreamLabels, max_line_bytes: int, *, protobuf: bool = False) -> None:
        self.labels = labels
        self.max_line_bytes = max_line_bytes
        self.protobuf = protobuf
        """Entries are `(ts text, encoded logproto entry)` (else `(ts text, line)` for JSON)."""
        self._decoder = msgspec.json.Decoder(LineHead)
        self._timestamps = TimestampParser()
        self._newest: dict[tuple[str, str], int] = {}
        self._now = self._low = self._high = 0
        self._retimed = False

    def parse(self, block: bytes, default_service: str, batch: Batch) -> ParseCounts:
        """Add the lines of `block` (complete lines joined by newlines) to `batch`; blank ones are skipped."""
        if not block:
            return ParseCounts()
        if self.protobuf:
            # Protobuf entries take the lines as bytes: split once, no text unless a line needs it.
            lines = _utf8_lines(block)
            heads = self._decode(block, len(lines))
            counts = self._file_protobuf(heads, lines, default_service, batch)
            count = len(lines)
        else:
            # One decode and one split for the whole block: "\n" is one byte in UTF-8 and a replacement
            # character never is, so the text lines pair up with the byte lines one to one.
            texts = _text_lines(block)
            heads = self._decode(block, len(texts))
            counts = self._file(heads, texts, default_service, batch, len(block))
            count = len(texts)
        counts.bytes = len(block) - count + 1  # without the newlines
        batch.bytes += counts.bytes + ENTRY_OVERHEAD * counts.lines
        return counts

    def _decode(self, block: bytes, count: int) -> list[LineHead | None]:
        """The head of each line, None where a line is not one JSON object.

        msgspec's `decode_lines` does the whole block in one call (about twice as fast as a call per
        line); it skips blank lines and fails on a bad one, and then the block is decoded line by line.
        """
        try:
            heads: list[LineHead | None] = self._decoder.decode_lines(block)  # type: ignore[assignment]
        except msgspec.DecodeError:
            pass
        else:
            if len(heads) == count:
                return heads
        return [self._decode_one(line) for line in block.split(b"\n")]

    def _decode_one(self, line: bytes) -> LineHead | None:
        try:
            head: LineHead = self._decoder.decode(line)
        except msgspec.DecodeError:
            return None
        return head

    def _file(
        self,
        heads: list[LineHead | None],
        texts: list[str],
        default_service: str,
        batch: Batch,
        block_bytes: int,
    ) -> ParseCounts:
        """File each line (its `head` beside its text) under its stream in `batch`."""
        counts = ParseCounts()
        now = time.time_ns()
        self._now, self._low, self._high = now, now - MAX_AGE_NS, now + MAX_AHEAD_NS
        stamp_text = self._stamp_text
        # A line can only be too long if the block is; then a character count flags candidates cheaply.
        limit = self.max_line_bytes // 4 if block_bytes > self.max_line_bytes else block_bytes
        # Per call: (service, level) as written → its stream buffer, and where this call's entries start.
        routes: dict[tuple[str | None, str | None], StreamBuffer] = {}
        starts: dict[StreamBuffer, int] = {}
        last_value: object = None
        last_text = str(now)
        retimed = False
        # The hot loop: one dict lookup and one append per plain JSON line. Everything rarer (not JSON,
        # blank, Docker, over-long) goes through `_slow`; ordering within streams is checked after.
        for head, text in zip(heads, texts):  # noqa: B905 - equal lengths by construction; strict costs
            if head is None or head.log is not None or len(text) > limit:
                self._slow(text, head, default_service, batch, routes, starts, counts)
                continue
            key = (head.service, head.level)
            buffer = routes.get(key)
            if buffer is None:
                buffer = self._route(key, default_service, batch, routes, starts)
            stamp = head.timestamp
            if stamp != last_value:
                last_value = stamp
                last_text = stamp_text(stamp)
                retimed = self._retimed
            if retimed:
                counts.retimed += 1
            buffer.values.append((last_text, text))
        self._close_call(batch, starts, counts)
        return counts

    def _close_call(self, batch: Batch, starts: dict[StreamBuffer, int], counts: ParseCounts) -> None:
        """Count the entries a call added, keep each stream within Loki's order window, remember newest."""
        rebuild = _retimed_protobuf if self.protobuf else _retimed_json
        for buffer, start in starts.items():
            counts.lines += len(buffer.values) - start
            counts.retimed += _keep_in_order(buffer, start, rebuild)
        for key, buffer in batch.streams.items():
            self._newest[key] = buffer.newest
        batch.lines += counts.lines

    def _file_protobuf(
        self, heads: list[LineHead | None], lines: list[bytes], default_service: str, batch: Batch
    ) -> ParseCounts:
        """`_file` for protobuf pushes: each entry is encoded here, while the line is at hand.

        A loop of its own rather than a branch in `_file`'s: this is the per-line hot path of both. The
        entry's head (timestamp field and line tag) changes with the timestamp only, and its length prefix
        comes from a table by line length.
        """
        counts = ParseCounts()
        now = time.time_ns()
        self._now, self._low, self._high = now, now - MAX_AGE_NS, now + MAX_AHEAD_NS
        stamp_text = self._stamp_text
        limit = min(self.max_line_bytes, FAST_LINE_BYTES)
        varints = logproto.VARINTS
        join = b"".join
        routes: dict[tuple[str | None, str | None], StreamBuffer] = {}
        starts: dict[StreamBuffer, int] = {}
        last_value: object = None
        last_text = str(now)
        ts_head = logproto.timestamp_head(now)
        prefixes = logproto.entry_prefixes(len(ts_head))
        retimed = False
        for head, line in zip(heads, lines):  # noqa: B905 - equal lengths by construction
            if head is None or head.log is not None or len(line) > limit:
                self._slow(line.decode(), head, default_service, batch, routes, starts, counts)
                continue
            key = (head.service, head.level)
            buffer = routes.get(key)
            if buffer is None:
                buffer = self._route(key, default_service, batch, routes, starts)
            stamp = head.timestamp
            if stamp != last_value:
                last_value = stamp
                last_text = stamp_text(stamp)
                retimed = self._retimed
                ts_head = logproto.timestamp_head(int(last_text))
                prefixes = logproto.entry_prefixes(len(ts_head))
            if retimed:
                counts.retimed += 1
            size = len(line)
            buffer.values.append((last_text, join((prefixes[size], ts_head, varints[size], line))))
        self._close_call(batch, starts, counts)
        return counts

    def _stamp_text(self, stamp: str | float | None) -> str:
        """The entry time as Loki's ns string; the read time if absent, unreadable or out of Loki's window."""
        ts = None if stamp is None else self._timestamps.parse(stamp)
        self._retimed = ts is not None and not self._low <= ts <= self._high
        if ts is None or self._retimed:
            ts = self._now
        return str(ts)

    def _route(
        self,
        key: tuple[str | None, str | None],
        default_service: str,
        batch: Batch,
        routes: dict[tuple[str | None, str | None], StreamBuffer],
        starts: dict[StreamBuffer, int],
    ) -> StreamBuffer:
        """The stream buffer for raw (service, level) values, created on first use."""
        raw_service, raw_level = key
        service = self.labels.service(raw_service, default_service) if raw_service else default_service
        stream = (service, self.labels.level(raw_level) if raw_level is not None else UNKNOWN_LEVEL)
        buffer = batch.streams.get(stream)
        if buffer is None:
            labels = (
                logproto.labels_field(self.labels.label_set(*stream))
                if self.protobuf
                else self.labels.encode(*stream)
            )
            buffer = StreamBuffer(labels, self._newest.get(stream, 0))
            batch.streams[stream] = buffer
        routes[key] = buffer
        starts.setdefault(buffer, len(buffer.values))
        return buffer

    def _slow(
        self,
        text: str,
        head: LineHead | None,
        default_service: str,
        batch: Batch,
        routes: dict[tuple[str | None, str | None], StreamBuffer],
        starts: dict[StreamBuffer, int],
        counts: ParseCounts,
    ) -> None:
        """A line off the fast path: blank (skipped), not JSON, Docker-wrapped or maybe over the limit."""
        if head is None:
            if not text.strip(BLANK):
                return
            head = _head_of_cut_line(text) if len(text) > self.max_line_bytes // 4 else LineHead()
        elif head.log is not None and head.time is not None:
            head, text = self._unwrap_docker(head)
        if len(text) > self.max_line_bytes // 4:
            text, truncated = self._bounded(text)
            counts.truncated += truncated
        buffer = self._route((head.service, head.level), default_service, batch, routes, starts)
        ts_text = self._stamp_text(head.timestamp)
        counts.retimed += self._retimed
        if self.protobuf:
            buffer.values.append(
                (ts_text, logproto.entry(logproto.timestamp_head(int(ts_text)), text.encode()))
            )
        else:
            buffer.values.append((ts_text, text))

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


_time_of = itemgetter(0)


_PREFIX_FIELD = re.compile(r'"(timestamp|level|service)"\s*:\s*"([^"\\]{0,128})"')
_PREFIX_SCAN = 4096
"""Bytes of a cut line searched for its labels: our lines put them first."""


def _head_of_cut_line(text: str) -> LineHead:
    """The labels of a JSON line whose end never came (the splitter cut it at the line limit).

    Such a line is not JSON any more, so it would ship as level `unknown`; whether a line over the limit
    is cut before or after it is parsed depends on how the pipe or file delivered it. Its opening fields
    still name its level and service: the first `"level": "..."`, `"service": "..."` and `"timestamp":
    "..."` in its first 4 KiB are taken (a nested object's field of the same name before the top-level one
    would win: a best effort for a line that is already broken, never worse than `unknown`).
    """
    if not text.startswith("{"):
        return LineHead()
    found: dict[str, str] = {}
    for match in _PREFIX_FIELD.finditer(text, 0, _PREFIX_SCAN):
        found.setdefault(match.group(1), match.group(2))
    return LineHead(timestamp=found.get("timestamp"), level=found.get("level"), service=found.get("service"))


def _retimed_json(value: Entry, ts: int) -> Entry:
    return str(ts), value[1]


def _retimed_protobuf(value: Entry, ts: int) -> Entry:
    encoded = value[1]
    assert isinstance(encoded, bytes)  # noqa: S101 - protobuf mode stores encoded entries
    return str(ts), logproto.entry(logproto.timestamp_head(ts), logproto.entry_line(encoded))


def _text_lines(block: bytes) -> list[str]:
    """The lines of `block` as text, invalid UTF-8 replaced, without carriage returns at their ends."""
    texts = block.decode("utf-8", "replace").split("\n")
    return [text.rstrip("\r") for text in texts] if b"\r" in block else texts


def _utf8_lines(block: bytes) -> list[bytes]:
    """The lines of `block` as valid UTF-8 bytes (invalid sequences replaced), without carriage returns."""
    if block.isascii() or _is_utf8(block):
        lines = block.split(b"\n")
        return [line.rstrip(b"\r") for line in lines] if b"\r" in block else lines
    return [text.encode() for text in _text_lines(block)]


def _is_utf8(block: bytes) -> bool:
    try:
        block.decode()
    except UnicodeDecodeError:
        return False
    return True


def _keep_in_order(buffer: StreamBuffer, start: int, rebuild: Callable[[Entry, int], Entry]) -> int:
    """Move up entries from `start` on that are over 50 min behind their stream's newest; how many moved.

    All entry times are within Loki's window, so they have 19 digits and compare as strings: the common
    case is settled by one `min`/`max` over the new entries, without a Python loop.
    """
    values = buffer.values
    if start >= len(values):
        return 0
    # Times only (the entries' second items never compared): ties are common, and lines can be long.
    oldest = int(min(map(_time_of, islice(values, start, None))))
    newest = int(max(map(_time_of, islice(values, start, None))))
    if oldest >= max(buffer.newest, newest) - MAX_BEHIND_NS:
        buffer.newest = max(buffer.newest, newest)
        return 0
    moved = 0
    latest = buffer.newest
    for index in range(start, len(values)):
        ts = int(values[index][0])
        if ts > latest:
            latest = ts
        elif ts < latest - MAX_BEHIND_NS:
            values[index] = rebuild(values[index], latest - MAX_BEHIND_NS)
            moved += 1
    buffer.newest = latest
    return moved
