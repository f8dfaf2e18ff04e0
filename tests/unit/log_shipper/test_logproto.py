"""The protobuf push: what the parser and `logproto` encode is exactly what protobuf itself decodes.

Every block is parsed twice, for JSON and for protobuf pushes, and the protobuf body is decoded with the
`protobuf` package (tests/support/logproto.py, independent of the hand-written encoder) and through the
strict fake Loki: same labels, same nanosecond timestamps, the same lines byte for byte.
"""

from __future__ import annotations

import json
import time

import msgspec
import pytest

from log_shipper import logproto
from log_shipper.batch import Batch, push_parts, split_body
from log_shipper.labels import StreamLabels
from log_shipper.loki import snappy_parts
from log_shipper.parser import MAX_BEHIND_NS, LineParser
from support.fake_loki import FakeLoki, parse_label_set
from support.logproto import PushRequest

NS = 1_000_000_000
PROTOBUF = {"content-type": "application/x-protobuf"}


def parsers(static: dict[str, str] | None = None, environment: str = "test", max_line: int = 1024):
    labels = {"team": "obs"} if static is None else static
    make = lambda protobuf: LineParser(  # noqa: E731 - two parsers alike but for the format
        StreamLabels(environment, labels, "fallback-svc"), max_line, protobuf=protobuf
    )
    return make(False), make(True)


def decoded(body: bytes) -> dict[tuple[tuple[str, str], ...], list[tuple[int, bytes]]]:
    """{sorted labels: [(ns, line bytes)]} of a protobuf body, decoded by protobuf itself."""
    request = PushRequest()
    request.ParseFromString(body)
    out: dict[tuple[tuple[str, str], ...], list[tuple[int, bytes]]] = {}
    for stream in request.streams:
        key = tuple(sorted(parse_label_set(stream.labels).items()))
        out.setdefault(key, []).extend(
            (entry.timestamp.seconds * NS + entry.timestamp.nanos, entry.line.encode())
            for entry in stream.entries
        )
    return out


def json_streams(body: bytes) -> dict[tuple[tuple[str, str], ...], list[tuple[int, bytes]]]:
    document = msgspec.json.decode(b"".join(push_parts([body])))
    return {
        tuple(sorted(stream["stream"].items())): [(int(ts), text.encode()) for ts, text in stream["values"]]
        for stream in document["streams"]
    }


def assert_same(protobuf_body: bytes, json_body: bytes) -> None:
    """Same streams and lines; times equal, but for lines with no time of their own (each parser stamps
    those with its own read time, microseconds apart)."""
    got, expected = decoded(protobuf_body), json_streams(json_body)
    assert got.keys() == expected.keys()
    for key, entries in expected.items():
        assert [line for _, line in got[key]] == [line for _, line in entries]
        for (ns, line), (expected_ns, _) in zip(got[key], entries, strict=True):
            if b'"timestamp": "' in line or b'"time"' in line:
                assert ns == expected_ns, line
            else:
                assert abs(ns - expected_ns) < 2 * NS


def both(block: bytes, **options) -> tuple[bytes, bytes]:
    """(JSON segment, protobuf segment) of one block."""
    json_parser, protobuf_parser = parsers(**options)
    json_batch, protobuf_batch = Batch(), Batch()
    json_parser.parse(block, "src", json_batch)
    protobuf_parser.parse(block, "src", protobuf_batch)
    return json_batch.encode(msgspec.json.Encoder()), protobuf_batch.encode_protobuf()


def stamp(offset: float = -60) -> str:
    moment = time.time() + offset
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment * 1e6) % 10**6:06d}Z"


BLOCK = b"\n".join(
    [
        json.dumps({"timestamp": stamp(), "level": "INFO", "service": "gatewayz-api", "n": 1}).encode(),
        json.dumps({"timestamp": stamp(), "level": "ERROR", "service": "gatewayz-api", "n": 2}).encode(),
        '{"level":"INFO","msg":"héllo wörld ✓"}'.encode(),
        b"Traceback (most recent call last):",
        b"invalid \xff\xfe utf-8",
        b"windows line\r",
        json.dumps({"log": '{"level":"WARNING","n":3}\n', "stream": "stdout", "time": stamp()}).encode(),
        json.dumps({"level": "INFO", "pad": "x" * 5000}).encode(),
        json.dumps({"level": "INFO", "timestamp": 12}).encode(),
    ]
)


class TestSameAsJson:
    def test_labels_timestamps_and_lines_match_the_json_push(self):
        """Plain, non-ASCII, invalid UTF-8, CRLF, Docker-wrapped, over-long and retimed lines alike."""
        json_body, protobuf_body = both(BLOCK, max_line=4096)
        assert_same(protobuf_body, json_body)
        assert sum(len(v) for v in decoded(protobuf_body).values()) == 9

    def test_label_values_needing_escapes(self):
        """Quotes, backslashes and newlines in a label value survive the label-set syntax."""
        json_body, protobuf_body = both(
            b'{"level":"INFO"}', static={"note": 'say "hi"\\ \n now'}, environment="prod ✓"
        )
        [labels] = decoded(protobuf_body)
        assert dict(labels)["note"] == 'say "hi"\\ \n now'
        assert dict(labels)["environment"] == "prod ✓"
        assert_same(protobuf_body, json_body)

    @pytest.mark.parametrize("size", [1, 127, 128, 3999, 4000, 4001, 4095, 4096, 16384, 200_000])
    def test_every_length_prefix(self, size):
        """Line lengths around each varint and table boundary decode to the same line."""
        line = json.dumps({"timestamp": stamp(), "level": "INFO", "pad": "y" * size}).encode()
        json_body, protobuf_body = both(line, max_line=262_144)
        assert decoded(protobuf_body) == json_streams(json_body)


class TestOrderWindow:
    def test_entries_too_far_behind_are_moved_up_and_still_decode(self):
        """An entry 2 h behind its stream's newest gets the window's edge as its time; its line is intact."""
        _, parser = parsers()
        now = time.time()
        batch = Batch()
        newest = json.dumps({"level": "INFO", "timestamp": stamp(0)}).encode()
        late = json.dumps({"level": "INFO", "timestamp": stamp(-7200), "late": True}).encode()
        counts = parser.parse(newest + b"\n" + late, "s", batch)
        assert counts.retimed == 1
        [entries] = decoded(batch.encode_protobuf()).values()
        assert [line for _, line in entries] == [newest, late]
        assert entries[0][0] - entries[1][0] == MAX_BEHIND_NS
        assert abs(entries[0][0] / NS - now) < 5


class TestSplit:
    def test_a_too_large_body_splits_into_two_halves_of_the_entries(self):
        """413: each half decodes on its own, the two together hold every entry once, by stream."""
        block = b"\n".join(json.dumps({"level": lv, "n": i}).encode() for i, lv in enumerate("AB" * 5))
        _, body = both(block)
        halves = split_body(body)
        assert [count for _, count in halves] == [5, 5]
        merged: dict = {}
        for half, _ in halves:
            for labels, entries in decoded(half).items():
                merged.setdefault(labels, []).extend(entries)
        assert merged == decoded(body)

    def test_a_single_entry_is_not_split(self):
        """One entry cannot be halved: it comes back as it was."""
        _, body = both(b'{"level":"INFO"}')
        assert split_body(body) == [(body, 1)]


class TestThroughTheFake:
    def test_the_strict_fake_stores_what_was_sent(self):
        """Snappy block format over the wire: 204, and the stored lines are the lines, in order."""
        json_body, protobuf_body = both(BLOCK, max_line=4096)
        with FakeLoki() as loki:
            status, _, _ = loki.handle_push(PROTOBUF, snappy_parts([protobuf_body]))
            assert status == 204
            stored = {tuple(sorted(s.items())) for s in loki.streams()}
            assert stored == set(json_streams(json_body))
            expected = [line.decode() for lines in json_streams(json_body).values() for _, line in lines]
            assert sorted(loki.lines()) == sorted(expected)

    def test_segments_concatenate_into_one_push(self):
        """Two spooled protobuf segments joined are one valid PushRequest with both streams' entries."""
        _, first = both(b'{"level":"INFO","n":1}')
        _, second = both(b'{"level":"ERROR","n":2}')
        assert push_parts([first, second]) == [first, second]
        assert len(decoded(first + second)) == 2
        assert logproto.split_push(first + second)[0][1] == 1
