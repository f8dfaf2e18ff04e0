"""The strict fake Loki answers pushes the way Loki 3.7.6 does (BACKENDS.md), so other tests can trust it."""

from __future__ import annotations

import gzip
import time

import cramjam
import httpx
import msgspec
import pytest

from support.fake_loki import FakeLoki
from support.logproto import PushRequest

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def loki():
    with FakeLoki() as loki:
        yield loki


def body(*values, labels=None) -> bytes:
    stream = {"stream": labels if labels is not None else {"service": "s"}, "values": list(values)}
    return msgspec.json.encode({"streams": [stream]})


def now_ns(offset_seconds: float = 0) -> str:
    return str(time.time_ns() + int(offset_seconds * 1e9))


class TestPushContract:
    def test_good_push_is_204_and_stored(self, loki):
        """A valid push answers 204 with an empty body; the lines are readable back."""
        response = httpx.post(loki.push_url, content=body([now_ns(), "hello"]), headers=JSON)
        assert (response.status_code, response.content) == (204, b"")
        assert loki.lines(service="s") == ["hello"]

    def test_gzip_and_charset_are_accepted(self, loki):
        """`Content-Encoding: gzip` and `; charset=utf-8` are fine."""
        headers = {"Content-Type": "application/json; charset=utf-8", "Content-Encoding": "gzip"}
        response = httpx.post(loki.push_url, content=gzip.compress(body([now_ns(), "z"])), headers=headers)
        assert response.status_code == 204

    @pytest.mark.parametrize(
        ("headers", "content", "status"),
        [
            ({}, body(["1", "x"]), 400),
            ({"Content-Type": "text/plain"}, body(["1", "x"]), 400),
            (JSON, b"", 400),
            (JSON, b"{not json", 400),
            (JSON, b'{"streams": []}', 422),
            (JSON, b'{"streams": [{"stream": {"a": "b"}, "values": [[1, "x"]]}]}', 400),
        ],
        ids=["no-content-type", "text-plain", "empty", "invalid-json", "no-streams", "numeric-ts"],
    )
    def test_malformed_pushes(self, loki, headers, content, status):
        """No media type, a protobuf-looking type, empty or bad JSON, numeric ts: 400; no streams: 422."""
        assert httpx.post(loki.push_url, content=content, headers=headers).status_code == status

    @pytest.mark.parametrize(
        "labels",
        [{"bad-name": "x"}, {"1abc": "x"}, {"a": "x" * 2049}, {f"l{i}": "v" for i in range(16)}],
        ids=["dash", "digit", "long-value", "16-names"],
    )
    def test_labels_loki_refuses(self, loki, labels):
        """Label names outside [a-zA-Z_][a-zA-Z0-9_]*, values over 2,048 chars and 16 names: 400."""
        assert (
            httpx.post(loki.push_url, content=body([now_ns(), "x"], labels=labels), headers=JSON).status_code
            == 400
        )

    def test_400_keeps_the_good_entries(self, loki):
        """One good and one 30-day-old entry: 400, and the good one is stored anyway."""
        content = body([now_ns(), "good"], [now_ns(-30 * 86400), "old"])
        assert httpx.post(loki.push_url, content=content, headers=JSON).status_code == 400
        assert loki.lines() == ["good"]

    @pytest.mark.parametrize(
        ("offset", "line"), [(3600, "x"), (0, "y" * 262_145)], ids=["future", "too-long"]
    )
    def test_entries_refused(self, loki, offset, line):
        """An hour in the future, or a line over 262,144 bytes: 400."""
        assert (
            httpx.post(loki.push_url, content=body([now_ns(offset), line]), headers=JSON).status_code == 400
        )

    def test_far_behind_in_a_stream_is_refused(self, loki):
        """Out of order by 30 minutes is fine; by 2 hours it is `entry too far behind`."""
        httpx.post(loki.push_url, content=body([now_ns(), "newest"]), headers=JSON)
        assert (
            httpx.post(loki.push_url, content=body([now_ns(-1800), "late"]), headers=JSON).status_code == 204
        )
        assert (
            httpx.post(loki.push_url, content=body([now_ns(-7200), "later"]), headers=JSON).status_code == 400
        )

    def test_exact_duplicates_are_stored_once(self, loki):
        """The same (timestamp, line) twice: both 204, one entry."""
        ts = now_ns()
        for _ in range(2):
            assert httpx.post(loki.push_url, content=body([ts, "dup"]), headers=JSON).status_code == 204
        assert loki.lines() == ["dup"]

    def test_empty_stream_labels_become_unknown_service(self, loki):
        """`"stream": {}` is stored under service_name=unknown_service."""
        httpx.post(loki.push_url, content=body([now_ns(), "x"], labels={}), headers=JSON)
        assert loki.streams() == [{"service_name": "unknown_service"}]


class TestInjection:
    def test_scripted_429_carries_retry_after(self, loki):
        """`fail_next(429, retry_after=...)` answers once with the header, then normally."""
        loki.fail_next(429, retry_after="3")
        first = httpx.post(loki.push_url, content=body([now_ns(), "x"]), headers=JSON)
        assert (first.status_code, first.headers["retry-after"]) == (429, "3")
        assert httpx.post(loki.push_url, content=body([now_ns(), "x"]), headers=JSON).status_code == 204

    def test_outage_refuses_connections_until_restarted(self, loki):
        """`stop()` makes pushes fail to connect; `start()` serves again on the same port."""
        loki.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.post(loki.push_url, content=body([now_ns(), "x"]), headers=JSON)
        loki.start()
        assert httpx.post(loki.push_url, content=body([now_ns(), "x"]), headers=JSON).status_code == 204


def protobuf_body(*entries: tuple[str, str], labels: str = '{service="s"}', compress: bool = True) -> bytes:
    request = PushRequest()
    if entries or labels != "-":
        stream = request.streams.add(labels=labels)
        for ts, text in entries:
            entry = stream.entries.add(line=text)
            entry.timestamp.seconds, entry.timestamp.nanos = divmod(int(ts), 1_000_000_000)
    raw = request.SerializeToString()
    return bytes(cramjam.snappy.compress_raw(raw)) if compress else raw


PROTOBUF = {"Content-Type": "application/x-protobuf"}


class TestProtobufPushContract:
    def test_good_push_is_204_with_nanoseconds_and_labels(self, loki):
        """A snappy `logproto.PushRequest`: 204, stored under its parsed labels at its exact time."""
        ts = now_ns()
        body = protobuf_body((ts, "hello ✓"), labels='{service="s", note="a \\"q\\" b"}')
        response = httpx.post(loki.push_url, content=body, headers=PROTOBUF)
        assert (response.status_code, response.content) == (204, b"")
        assert loki.entries(service="s") == [(int(ts), "hello ✓")]
        assert loki.streams() == [{"service": "s", "note": 'a "q" b'}]

    def test_any_type_but_json_is_read_as_protobuf(self, loki):
        """Loki snappy-decodes every type but JSON: text/plain with a valid body is stored too."""
        body = protobuf_body((now_ns(), "x"))
        assert (
            httpx.post(loki.push_url, content=body, headers={"Content-Type": "text/plain"}).status_code == 204
        )

    @pytest.mark.parametrize(
        ("content", "status", "message"),
        [
            (b"", 400, "snappy: corrupt input"),
            (b"not snappy at all", 400, "snappy: corrupt input"),
            (protobuf_body((now_ns(), "x"), compress=False), 400, "snappy"),
            (bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff")), 400, "proto"),
            (protobuf_body((now_ns(), "x"), labels='service="s"'), 400, "couldn't parse labels"),
            (protobuf_body((now_ns(), "x"), labels='{bad-name="s"}'), 400, "couldn't parse labels"),
            (protobuf_body(labels="-"), 422, "at least one valid stream"),
        ],
        ids=["empty", "corrupt", "uncompressed", "not-protobuf", "no-braces", "bad-name", "no-streams"],
    )
    def test_malformed_protobuf_pushes(self, loki, content, status, message):
        """Not snappy, not a PushRequest, labels that do not parse: 400; no streams: 422."""
        response = httpx.post(loki.push_url, content=content, headers=PROTOBUF)
        assert response.status_code == status
        assert message in response.text

    def test_unknown_content_encoding_is_refused(self, loki):
        """`Content-Encoding: br` is not one Loki reads: 400, nothing stored."""
        headers = {**PROTOBUF, "Content-Encoding": "br"}
        response = httpx.post(loki.push_url, content=protobuf_body((now_ns(), "x")), headers=headers)
        assert response.status_code == 400
        assert loki.lines() == []

    def test_400_keeps_the_good_entries(self, loki):
        """As with JSON: one good and one 30-day-old entry: 400, and the good one is stored."""
        body = protobuf_body((now_ns(), "good"), (now_ns(-30 * 86400), "old"))
        assert httpx.post(loki.push_url, content=body, headers=PROTOBUF).status_code == 400
        assert loki.lines() == ["good"]


class TestLokiMetrics:
    def test_metrics_count_lines_received_and_discarded_by_reason(self, loki):
        """/metrics: loki_distributor_lines_received_total and loki_discarded_samples_total{reason}."""
        httpx.post(loki.push_url, content=body([now_ns(), "a"], [now_ns(-30 * 86400), "old"]), headers=JSON)
        big = body(*([now_ns(i / 1e6), "x" * 1000] for i in range(7000)))
        assert httpx.post(loki.push_url, content=big, headers=JSON).status_code == 429
        text = httpx.get(loki.url + "/metrics").text
        assert 'loki_distributor_lines_received_total{tenant="fake"} 7002' in text
        assert 'loki_discarded_samples_total{reason="greater_than_max_sample_age",tenant="fake"} 1' in text
        assert 'loki_discarded_samples_total{reason="rate_limited",tenant="fake"} 7000' in text
