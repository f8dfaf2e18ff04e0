"""The Tempo and Loki fakes keep the wire contract BACKENDS.md records for the real servers."""

from __future__ import annotations

import base64
import time

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from support.fake_loki_query import FakeLokiQuery
from support.fake_tempo import FakeTempo


class TestFakeTempo:
    def test_trace_by_id_answers_like_tempo(self):
        """Spans sent over OTLP/HTTP come back as `batches` with base64 ids; unknown 404, non-hex 400."""
        with FakeTempo() as tempo:
            provider = TracerProvider()
            provider.add_span_processor(
                SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{tempo.url}/v1/traces"))
            )
            with provider.get_tracer("t").start_as_current_span("op") as span:
                pass
            trace_id = format(span.get_span_context().trace_id, "032x")
            found = httpx.get(f"{tempo.url}/api/traces/{trace_id}")
            assert found.status_code == 200
            (stored,) = found.json()["batches"][0]["scopeSpans"][0]["spans"]
            assert base64.b64decode(stored["traceId"]).hex() == trace_id
            assert httpx.get(f"{tempo.url}/api/traces/{'0' * 31}1").status_code == 404
            assert httpx.get(f"{tempo.url}/api/traces/not-hex").status_code == 400
            assert httpx.get(f"{tempo.url}/ready").text == "ready"
            provider.shutdown()


class TestFakeLokiQuery:
    @pytest.fixture
    def loki(self):
        with FakeLokiQuery() as fake:
            fake.add({"service": "a", "level": "INFO"}, "first abc")
            fake.add({"service": "a", "level": "ERROR"}, "second abc")
            fake.add({"service": "b", "level": "INFO"}, "other abc")
            yield fake

    def test_query_range_shape_and_filters(self, loki):
        """Selector and `|=` filter pick lines; the answer is a `streams` result with string timestamps."""
        params = {
            "query": '{service="a"} |= "abc"',
            "start": str(time.time_ns() - 10**10),
            "direction": "forward",
        }
        body = httpx.get(f"{loki.url}/loki/api/v1/query_range", params=params).json()
        assert (body["status"], body["data"]["resultType"]) == ("success", "streams")
        lines = [value[1] for stream in body["data"]["result"] for value in stream["values"]]
        assert sorted(lines) == ["first abc", "second abc"]
        assert all(
            isinstance(value[0], str) for stream in body["data"]["result"] for value in stream["values"]
        )

    @pytest.mark.parametrize(
        "params",
        [
            {},
            {"query": "service=a"},
            {"query": '{service="a"} | json'},
            {"query": '{service="a"}', "start": "now"},
        ],
    )
    def test_bad_queries_are_400(self, loki, params):
        """A missing, unparseable or unsupported query, or a bad timestamp, is a 400 as Loki answers."""
        assert httpx.get(f"{loki.url}/loki/api/v1/query_range", params=params).status_code == 400
