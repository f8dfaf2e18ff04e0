"""An open batch: entries grouped per stream, encoded once into the body a spool segment holds.

A segment is JSON stream objects (`{"stream": …, "values": …}`, comma-separated) or protobuf
`PushRequest.streams` records (`log_shipper.logproto`), as `LOKI_PUSH_ENCODING` chose when it was sealed;
its first byte tells which (`{` or 0x0a), so a spool written under the other setting is still shipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

import msgspec

from log_shipper import logproto

Entry = tuple[str, str | bytes]
"""(Unix ns as text, the line) for JSON; (Unix ns as text, the encoded logproto entry) for protobuf."""
_encoded = itemgetter(1)


class StreamBuffer:
    """The entries of one stream in one batch; `newest` carries over so late lines can be kept in order."""

    __slots__ = ("labels", "newest", "values")

    def __init__(self, labels: bytes, newest: int) -> None:
        self.labels = labels
        """The JSON `stream` object, or the protobuf `labels` field."""
        self.values: list[Entry] = []
        self.newest = newest


class Batch:
    """Lines not yet spooled, by (service, level)."""

    __slots__ = ("bytes", "lines", "routes", "started", "streams")

    def __init__(self) -> None:
        self.streams: dict[tuple[str, str], StreamBuffer] = {}
        self.routes: dict[tuple[str | None, str | None, str], StreamBuffer] = {}
        """Raw (service, level, default service) values → their stream, so labels resolve once a batch."""
        self.lines = 0
        self.bytes = 0
        self.started = 0.0

    def encode(self, encoder: msgspec.json.Encoder) -> bytes:
        """The comma-separated stream objects; a push body is `{"streams":[` + segments + `]}`."""
        parts: list[bytes] = []
        for buffer in self.streams.values():
            if buffer.values:
                if parts:
                    parts.append(b",")
                # One join at the end: the values (most of the bytes) are copied once, not per `+`.
                parts += (b'{"stream":', buffer.labels, b',"values":', encoder.encode(buffer.values), b"}")
        return b"".join(parts)

    def encode_protobuf(self) -> bytes:
        """The `PushRequest.streams` records; a push body is segments joined."""
        return b"".join(
            logproto.stream_record(buffer.labels, map(_encoded, buffer.values))
            for buffer in self.streams.values()
            if buffer.values
        )


def is_protobuf(segment: bytes) -> bool:
    """Whether a spooled segment holds protobuf records (else JSON stream objects)."""
    return segment[:1] == logproto.STREAM_TAG


PUSH_PREFIX = b'{"streams":['
PUSH_SUFFIX = b"]}"


def push_parts(segments: Sequence[bytes]) -> list[bytes]:
    """One Loki push body from spooled segment bodies of one format, as parts to concatenate (no copy)."""
    if segments and is_protobuf(segments[0]):
        return list(segments)
    parts = [PUSH_PREFIX]
    for index, segment in enumerate(segments):
        if index:
            parts.append(b",")
        parts.append(segment)
    parts.append(PUSH_SUFFIX)
    return parts


class PushStream(msgspec.Struct, frozen=True):
    """One stream of a push body, decoded only to split a batch Loki found too large."""

    stream: dict[str, str]
    values: list[tuple[str, str]]


class PushRequest(msgspec.Struct, frozen=True):
    """A push body decoded (the 413 path only)."""

    streams: list[PushStream]


def split_body(body: bytes) -> list[tuple[bytes, int]]:
    """Two push bodies (with their entry counts) sharing the entries of `body`; one for a single entry."""
    if is_protobuf(body):
        return logproto.split_push(body)
    request = msgspec.json.decode(body, type=PushRequest)
    entries = [(stream.stream, value) for stream in request.streams for value in stream.values]
    if len(entries) < 2:
        return [(body, len(entries))]
    half = len(entries) // 2
    return [
        (_encode_entries(entries[:half]), half),
        (_encode_entries(entries[half:]), len(entries) - half),
    ]


def _encode_entries(entries: list[tuple[dict[str, str], tuple[str, str]]]) -> bytes:
    grouped: dict[bytes, tuple[dict[str, str], list[tuple[str, str]]]] = {}
    for labels, value in entries:
        key = msgspec.json.encode(labels)
        grouped.setdefault(key, (labels, []))[1].append(value)
    streams = [PushStream(stream=labels, values=values) for labels, values in grouped.values()]
    return msgspec.json.encode(PushRequest(streams=streams))
