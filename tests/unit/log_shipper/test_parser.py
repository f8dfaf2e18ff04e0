"""LineParser: labels, Loki-safe timestamps, Docker unwrapping, non-JSON and over-long lines."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec
import pytest

from log_shipper.batch import Batch
from log_shipper.parser import MAX_BEHIND_NS, TimestampParser

NS = 1_000_000_000


def iso(moment: float) -> str:
    return (
        datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{int(moment * 1000) % 1000:03d}Z"
    )


def line(**fields) -> bytes:
    return msgspec.json.encode(fields)


def entries(batch: Batch) -> dict[tuple[str, str], list[tuple[str, str]]]:
    return {key: buffer.values for key, buffer in batch.streams.items()}


class TestLabels:
    def test_json_line_keeps_its_text_and_gets_its_labels(self, parser):
        """A JSON line is shipped verbatim under service/level/environment plus the static labels."""
        stamp = iso(time.time() - 60)
        raw = line(timestamp=stamp, level="INFO", service="gatewayz-api", message="hi")
        batch = Batch()
        parser.parse(raw, "src", batch)
        [(key, values)] = entries(batch).items()
        assert key == ("gatewayz-api", "INFO")
        assert values == [(str(_ns(stamp)), raw.decode())]
        labels = msgspec.json.decode(batch.streams[key].labels)
        assert labels == {"service": "gatewayz-api", "level": "INFO", "environment": "test", "team": "obs"}

    def test_non_json_line_goes_through_as_unknown(self, parser):
        """A plain-text line keeps its text, with level `unknown` and the source's service."""
        batch = Batch()
        counts = parser.parse(b"Traceback (most recent call last):", "gatewayz-api", batch)
        assert counts.lines == 1
        assert entries(batch)[("gatewayz-api", "unknown")][0][1] == "Traceback (most recent call last):"

    def test_level_is_upper_cased_and_bounded(self, parser):
        """`warning` becomes WARNING; a level nobody knows becomes `unknown`, so levels cannot explode."""
        batch = Batch()
        parser.parse(
            line(level="warning", message="a") + b"\n" + line(level="x" * 50, message="b"), "s", batch
        )
        assert set(batch.streams) == {("s", "WARNING"), ("s", "unknown")}

    def test_unsafe_service_value_falls_back_to_the_source(self, parser):
        """A `service` with spaces or quotes cannot become a label value."""
        batch = Batch()
        parser.parse(line(service='bad "name" here', level="INFO"), "src", batch)
        assert set(batch.streams) == {("src", "INFO")}

    def test_two_json_values_on_one_line_stay_one_line(self, parser):
        """A line holding two JSON values is one non-JSON entry; the other lines keep their labels."""
        batch = Batch()
        counts = parser.parse(b'{"a": 1} {"b": 2}\n' + line(level="INFO", message="x"), "s", batch)
        assert counts.lines == 2
        assert entries(batch)[("s", "unknown")][0][1] == '{"a": 1} {"b": 2}'
        assert ("s", "INFO") in batch.streams

    def test_control_characters_are_content_not_blank(self, parser):
        """Only ASCII whitespace makes a line blank; a line of \\x1f is shipped."""
        batch = Batch()
        assert parser.parse(b"\x1f", "s", batch).lines == 1

    def test_blank_lines_are_skipped(self, parser):
        """Empty and whitespace-only lines are not shipped."""
        batch = Batch()
        counts = parser.parse(b"\n  \n" + line(level="INFO") + b"\n\n", "s", batch)
        assert counts.lines == 1


def _ns(text: str) -> int:
    return TimestampParser().parse(text) or 0


class TestTimestamps:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-11-26T18:00:00.123Z", 1795716000123000000),
            ("2026-11-26T18:00:00Z", 1795716000000000000),
            ("2026-11-26T18:00:00.123456789Z", 1795716000123456789),
            ("2026-11-26T20:00:00.5+02:00", 1795716000500000000),
            ("2026-11-26 18:00:00.250", 1795716000250000000),
        ],
    )
    def test_text_forms(self, text, expected):
        """RFC 3339 with Z, nanoseconds, offsets and naive UTC all become Unix nanoseconds."""
        assert TimestampParser().parse(text) == expected

    @pytest.mark.parametrize("value", [1795716000, 1795716000000, 1795716000000000, 1795716000000000000])
    def test_epoch_numbers(self, value):
        """Epoch seconds, ms, µs and ns are told apart by magnitude."""
        assert TimestampParser().parse(value) == 1795716000000000000

    def test_garbage_is_none(self):
        """Text that is not a time gives None (the line then gets its read time)."""
        assert TimestampParser().parse("yesterday") is None

    def test_entry_time_is_the_line_timestamp_as_a_string(self, parser):
        """Loki wants the entry time as a decimal string of nanoseconds."""
        moment = time.time() - 30
        batch = Batch()
        parser.parse(line(timestamp=iso(moment), level="INFO"), "s", batch)
        [(ts, _)] = batch.streams[("s", "INFO")].values
        assert isinstance(ts, str)
        assert abs(int(ts) - moment * NS) < 2_000_000

    @pytest.mark.parametrize("age_seconds", [30 * 86400, -3600])
    def test_too_old_or_too_new_is_restamped_now(self, parser, age_seconds):
        """An entry Loki would refuse as too old (> 7 d) or too new (+1 h) is stamped with the read time."""
        batch = Batch()
        before = time.time_ns()
        counts = parser.parse(line(timestamp=iso(time.time() - age_seconds), level="INFO"), "s", batch)
        [(ts, _)] = batch.streams[("s", "INFO")].values
        assert counts.retimed == 1
        assert before <= int(ts) <= time.time_ns()

    def test_entry_far_behind_its_stream_is_moved_up(self, parser):
        """Within a stream an entry over an hour behind the newest would be refused; it is moved up."""
        now = time.time()
        batch = Batch()
        parser.parse(line(timestamp=iso(now), level="INFO"), "s", batch)
        counts = parser.parse(line(timestamp=iso(now - 2 * 3600), level="INFO"), "s", batch)
        first, second = (int(ts) for ts, _ in batch.streams[("s", "INFO")].values)
        assert counts.retimed == 1
        assert second == first - MAX_BEHIND_NS

    def test_newest_carries_over_to_the_next_batch(self, parser):
        """The behind-check survives sealing: the next batch of the same stream still knows the newest."""
        now = time.time()
        parser.parse(line(timestamp=iso(now), level="INFO"), "s", Batch())
        batch = Batch()
        counts = parser.parse(line(timestamp=iso(now - 2 * 3600), level="INFO"), "s", batch)
        assert counts.retimed == 1


class TestDocker:
    def test_json_file_wrapper_is_unwrapped(self, parser):
        """Docker's `{"log": ..., "stream": ..., "time": ...}` ships the inner line, with its labels."""
        stamp = iso(time.time() - 60)
        inner = line(timestamp=stamp, level="ERROR", service="gatewayz-api", message="x")
        wrapped = line(log=inner.decode() + "\n", stream="stdout", time=iso(time.time() - 59))
        batch = Batch()
        parser.parse(wrapped, "s", batch)
        [(ts, text)] = batch.streams[("gatewayz-api", "ERROR")].values
        assert text == inner.decode()
        assert int(ts) == _ns(stamp)

    def test_plain_text_inside_docker_takes_dockers_time(self, parser):
        """A non-JSON line inside the wrapper is unwrapped and timed by Docker's `time`."""
        moment = time.time() - 5
        wrapped = line(log="plain words\n", stream="stderr", time=iso(moment))
        batch = Batch()
        parser.parse(wrapped, "svc", batch)
        [(ts, text)] = batch.streams[("svc", "unknown")].values
        assert text == "plain words"
        assert abs(int(ts) - moment * NS) < 2_000_000


class TestLimits:
    def test_over_long_line_is_cut_with_a_marker_and_counted(self, parser):
        """A line over the limit (1024 bytes here) is cut to the limit and says how long it was."""
        raw = line(level="INFO", message="x" * 5000)
        batch = Batch()
        counts = parser.parse(raw, "s", batch)
        [(_, text)] = batch.streams[("s", "INFO")].values
        assert counts.truncated == 1
        assert len(text.encode()) <= 1024
        assert text.endswith(f"[truncated {len(raw)} bytes]")

    def test_a_cut_json_line_keeps_its_labels(self, parser):
        """A JSON line cut before its end (the splitter's cut at the limit: no longer JSON) still ships
        under its own level and service, cut to the limit, not as `unknown`."""
        raw = line(level="WARNING", service="gatewayz-api", blob="x" * 5000)[:3000]
        batch = Batch()
        counts = parser.parse(raw, "src", batch)
        [(_, text)] = batch.streams[("gatewayz-api", "WARNING")].values
        assert counts.truncated == 1
        assert text.startswith('{"level":"WARNING"')
        assert len(text.encode()) <= 1024

    def test_short_broken_json_stays_unknown(self, parser):
        """Only long (cut) lines are searched: a short broken line is plain text, level `unknown`."""
        batch = Batch()
        parser.parse(b'{"level":"ERROR","message":"unterminated', "src", batch)
        assert set(batch.streams) == {("src", "unknown")}

    def test_multibyte_text_is_cut_on_a_character_boundary(self, parser):
        """Cutting never leaves half a UTF-8 character."""
        batch = Batch()
        parser.parse(("é" * 2000).encode(), "s", batch)
        [(_, text)] = batch.streams[("s", "unknown")].values
        assert len(text.encode()) <= 1024
        text.encode().decode()
