"""Loki's `logproto.PushRequest` (pkg/push/push.proto) written by hand, field by field, as push bodies.

    PushRequest   { repeated StreamAdapter streams = 1; }
    StreamAdapter { string labels = 1; repeated EntryAdapter entries = 2; }   labels: `{name="value", …}`
    EntryAdapter  { google.protobuf.Timestamp timestamp = 1; string line = 2; }
    Timestamp     { int64 seconds = 1; int32 nanos = 2; }

Hand-written rather than built with the `protobuf` package: parsing the lines and building the same
requests with its C (upb) runtime cost 6.8 µs a line, parsing, encoding and snappy-compressing them here
4.1 µs (bench/log_shipper_push_encoding.py; BENCHMARKS.md, "Push encoding"). The parser writes each entry
as it files the line (the length prefix is looked up by line length and timestamp size, the timestamp
encoded once per distinct time), so a sealed batch is a join of ready entries. Repeated fields concatenate,
so a push body is spooled segments joined, each a run of `streams` records. Structured metadata is not sent
(every field is in the JSON line). The strict fake Loki decodes these bodies with the `protobuf` package.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

_NS = 1_000_000_000
STREAM_TAG = b"\x0a"
"""PushRequest.streams (field 1, length-delimited): the first byte of every protobuf segment."""
_ENTRY_TAG = b"\x12"
_TABLE_SIZE = 4096
"""Lines shorter than this take their length prefixes from tables (nearly all log lines)."""


def varint(value: int) -> bytes:
    """`value` (≥ 0) as a protobuf base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


VARINTS = tuple(varint(n) for n in range(_TABLE_SIZE))
_PREFIXES: dict[int, tuple[bytes, ...]] = {}


def timestamp_head(ns: int) -> bytes:
    """An entry's timestamp field followed by its line tag: everything of an entry before the line length."""
    seconds, nanos = divmod(ns, _NS)
    message = _seconds_field(seconds) + (b"\x10" + varint(nanos) if nanos else b"")
    return b"\x0a" + VARINTS[len(message)] + message + b"\x12"


@functools.lru_cache(maxsize=64)
def _seconds_field(seconds: int) -> bytes:
    """Timestamp.seconds; the same for every entry of a second, so encoded once."""
    return b"\x08" + varint(seconds)


def entry_prefixes(head_size: int) -> tuple[bytes, ...]:
    """For entries whose timestamp head is `head_size` bytes: by line length, the entry's tag and size."""
    table = _PREFIXES.get(head_size)
    if table is None:
        table = _PREFIXES[head_size] = tuple(
            _ENTRY_TAG + varint(head_size + len(VARINTS[n]) + n) for n in range(_TABLE_SIZE)
        )
    return table


def entry(head: bytes, line: bytes) -> bytes:
    """One `streams[].entries` field: `head` from `timestamp_head`, `line` UTF-8."""
    size = len(line)
    length = VARINTS[size] if size < _TABLE_SIZE else varint(size)
    return b"".join((_ENTRY_TAG, varint(len(head) + len(length) + size), head, length, line))


def labels_field(label_set: str) -> bytes:
    """StreamAdapter.labels for `{name="value", …}`."""
    encoded = label_set.encode()
    return b"\x0a" + varint(len(encoded)) + encoded


def stream_record(labels: bytes, entries: Iterable[bytes]) -> bytes:
    """One PushRequest.streams field: `labels` from `labels_field`, then the encoded entries."""
    body = b"".join(entries)
    return b"".join((STREAM_TAG, varint(len(labels) + len(body)), labels, body))


def _fields(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(field number, whole field bytes, payload) of each length-delimited field; ValueError if other."""
    fields = []
    position = 0
    while position < len(data):
        start = position
        tag, position = _read_varint(data, position)
        if tag & 7 != 2:
            raise ValueError(f"unexpected wire type {tag & 7} at byte {start}")
        size, position = _read_varint(data, position)
        payload = data[position : position + size]
        position += size
        if len(payload) != size:
            raise ValueError("truncated field")
        fields.append((tag >> 3, data[start:position], payload))
    return fields


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def entry_line(encoded: bytes) -> bytes:
    """The line of one encoded entry (field 2 of the EntryAdapter inside it)."""
    ((_, _, payload),) = _fields(encoded)
    return next(value for number, _, value in _fields(payload) if number == 2)


def split_push(body: bytes) -> list[tuple[bytes, int]]:
    """Two push bodies (with their entry counts) sharing the entries of `body`; one for a single entry."""
    entries = [(labels, item) for _, _, stream in _fields(body) for labels, item in _stream_entries(stream)]
    if len(entries) < 2:
        return [(body, len(entries))]
    half = len(entries) // 2
    return [(_encode_entries(entries[:half]), half), (_encode_entries(entries[half:]), len(entries) - half)]


def _stream_entries(stream: bytes) -> list[tuple[bytes, bytes]]:
    fields = _fields(stream)
    labels = next((whole for number, whole, _ in fields if number == 1), b"")
    return [(labels, whole) for number, whole, _ in fields if number == 2]


def _encode_entries(entries: list[tuple[bytes, bytes]]) -> bytes:
    grouped: dict[bytes, list[bytes]] = {}
    for labels, item in entries:
        grouped.setdefault(labels, []).append(item)
    return b"".join(stream_record(labels, items) for labels, items in grouped.items())
