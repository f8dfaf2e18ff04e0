"""Inference signals after known requests: exact metric values, exemplars, bounded labels, spans, logs."""

from __future__ import annotations

import io

import msgspec
import pytest
from gateway_testing import AUTH, USER_KEY, chat
from litestar.testing import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import create_app
from telemetry import Telemetry

URL = "/v1/chat/completions"
OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}


def run_known_sequence(client) -> None:
    """2 upstream successes, an upstream 500, a fallback, a timeout, a cached pair and an unknown model."""
    for body in (chat("up-ok"), chat("up-ok"), chat("up-500"), chat("shared"), chat("up-slow")):
        client.post(URL, json=body, headers=AUTH)
    for _ in range(2):
        client.post(URL, json=chat("echo", temperature=0), headers=AUTH)
    client.post(URL, json=chat("not-in-catalog"), headers=AUTH)


def sample(telemetry, name, **labels):
    return telemetry.registry.get_sample_value(name, labels)


class TestExactValues:
    @pytest.fixture
    def ran(self, client, gateway_telemetry):
        run_known_sequence(client)
        return gateway_telemetry

    def test_requests_by_status(self, ran):
        """Each provider attempt is counted once under its outcome; a cache hit is not an attempt."""
        expected = {
            ("upstream", "up-ok", "success"): 2.0,
            ("upstream", "up-500", "error"): 1.0,
            ("upstream", "shared", "error"): 1.0,
            ("local", "shared", "success"): 1.0,
            ("upstream", "up-slow", "timeout"): 1.0,
            ("local", "echo", "success"): 1.0,
            ("upstream", "up-ok", "error"): 0.0,
        }
        found = {
            labels: sample(
                ran, "model_inference_requests_total", provider=labels[0], model=labels[1], status=labels[2]
            )
            for labels in expected
        }
        assert found == expected

    def test_duration_tokens_credits(self, ran):
        """Duration count, token and credit totals match the upstream's usage and the catalog prices."""
        labels = {"provider": "upstream", "model": "up-ok"}
        assert sample(ran, "model_inference_duration_seconds_count", **labels) == 2.0
        assert sample(ran, "tokens_used_total", token_type="prompt", **labels) == 22.0
        assert sample(ran, "tokens_used_total", token_type="completion", **labels) == 14.0
        assert sample(ran, "credits_used_total", **labels) == 2 * (11 * 0.5 + 7 * 0.25)
        assert sample(ran, "credits_used_total", provider="upstream", model="up-500") == 0.0

    def test_timeout_is_observed_near_the_timeout(self, ran):
        """The timed-out attempt's duration is the provider timeout (0.5 s), not the upstream's 2 s."""
        total = sample(ran, "model_inference_duration_seconds_sum", provider="upstream", model="up-slow")
        assert 0.45 < total < 1.5

    def test_provider_health(self, ran):
        """Upstream: 2 of 5 calls good → available, error rate 0.6; local: all good."""
        assert sample(ran, "provider_availability", provider="upstream") == 1.0
        assert sample(ran, "provider_error_rate", provider="upstream") == pytest.approx(0.6)
        assert sample(ran, "provider_error_rate", provider="local") == 0.0
        assert sample(ran, "provider_response_time_seconds", provider="upstream") > 0.1

    def test_cache(self, ran):
        """One miss then one hit on the completions cache, which now holds bytes."""
        assert sample(ran, "cache_misses_total", cache_name="completions") == 1.0
        assert sample(ran, "cache_hits_total", cache_name="completions") == 1.0
        assert sample(ran, "cache_size_bytes", cache_name="completions") > 200

    def test_unknown_model_adds_nothing(self, ran):
        """The unknown model appears under no label."""
        families = [m for m in ran.registry.collect() if m.name.startswith(("model_", "tokens_", "credits_"))]
        assert all("not-in-catalog" not in str(s.labels) for m in families for s in m.samples)


class TestExemplars:
    def test_sampled_requests_carry_trace_ids(self, client):
        """OpenMetrics shows trace_id exemplars on the inference, token and credit series."""
        client.post(URL, json=chat("up-ok"), headers=AUTH)
        text = client.get("/metrics", headers=OPENMETRICS).text
        for prefix in (
            (
                'model_inference_requests_total{model="up-ok",provider="upstream",status="success"} 1.0 '
                '# {trace_id="'
            ),
            'tokens_used_total{model="up-ok",provider="upstream",token_type="prompt"} 11.0 # {trace_id="',
            'credits_used_total{model="up-ok",provider="upstream"} 7.25 # {trace_id="',
        ):
            assert prefix in text

    def test_unsampled_requests_carry_none(self, test_settings, monkeypatch):
        """With tracing sampled off, no exemplar is attached."""
        monkeypatch.setenv("FAKE_UPSTREAM_KEY", "x")
        settings = msgspec.structs.replace(test_settings, otel_traces_sampler="always_off")
        telemetry = Telemetry.create(settings, exporter=InMemorySpanExporter(), log_stream=io.BytesIO())
        with TestClient(create_app(settings, telemetry)) as client:
            client.post(URL, json=chat("up-ok"), headers=AUTH)
            text = client.get("/metrics", headers=OPENMETRICS).text
        telemetry.tracer_provider.shutdown()
        assert (
            'model_inference_requests_total{model="up-ok",provider="upstream",status="success"} 1.0\n' in text
        )
        assert "trace_id" not in text


class TestBoundedLabels:
    def test_ten_thousand_unknown_models_add_no_series(self, client, gateway_telemetry):
        """10,000 distinct unknown model strings, each answered 404, leave the series count unchanged."""
        client.post(URL, json=chat("echo"), headers=AUTH)  # every family and the 404 path exist before

        client.post(URL, json=chat("warm-up-unknown"), headers=AUTH)

        def series() -> int:
            return sum(len(metric.samples) for metric in gateway_telemetry.registry.collect())

        before = series()
        app = client.app

        async def flood() -> list[int]:
            statuses = []
            headers = [
                (b"authorization", f"Bearer {USER_KEY}".encode()),
                (b"content-type", b"application/json"),
            ]
            for index in range(10_000):
                body = msgspec.json.encode(chat(f"unknown-model-{index}"))
                sent: list[dict] = []

                async def receive(body=body):
                    return {"type": "http.request", "body": body, "more_body": False}

                async def send(message, sent=sent):
                    sent.append(message)

                scope = {
                    "type": "http",
                    "asgi": {"version": "3.0"},
                    "http_version": "1.1",
                    "method": "POST",
                    "scheme": "http",
                    "path": URL,
                    "raw_path": URL.encode(),
                    "root_path": "",
                    "query_string": b"",
                    "headers": headers,
                    "client": ("127.0.0.1", 1),
                    "server": ("testserver", 80),
                    "state": {},
                }
                await app(scope, receive, send)
                statuses.append(sent[0]["status"])
            return statuses

        statuses = client.blocking_portal.call(flood)
        assert set(statuses) == {404}
        assert series() == before


class TestSpansAndLogs:
    def test_provider_span_has_gen_ai_attributes(self, client, gateway_telemetry, span_exporter):
        """Each provider call is a child of the server span with GenAI attributes; a failed one is ERROR."""
        client.post(URL, json=chat("shared"), headers=AUTH)
        gateway_telemetry.tracer_provider.force_flush()
        spans = span_exporter.get_finished_spans()
        server = next(s for s in spans if s.name == "POST /v1/chat/completions")
        calls = [s for s in spans if s.name.startswith("chat ")]
        assert [s.attributes["gen_ai.provider.name"] for s in calls] == ["upstream", "local"]
        failed, served = calls
        assert failed.status.status_code.name == "ERROR"
        assert failed.attributes["gen_ai.request.model"] == "up-500"
        assert served.parent.span_id == server.context.span_id
        assert served.context.trace_id == server.context.trace_id
        assert served.attributes["gen_ai.system"] == "local"
        assert served.attributes["gen_ai.response.model"] == "shared"
        assert served.attributes["gen_ai.usage.input_tokens"] == 9
        assert served.attributes["gen_ai.usage.output_tokens"] > 0

    def test_one_log_line_per_inference(self, client, log_capture):
        """Each inference writes one JSON line with provider, model, tokens, credits and cache hit."""
        client.post(URL, json=chat("up-ok", temperature=0), headers=AUTH)
        client.post(URL, json=chat("up-ok", temperature=0), headers=AUTH)
        lines = [line for line in log_capture.lines() if line["message"].startswith("Inference")]
        assert len(lines) == 2
        first, second = lines
        assert first["provider"] == "upstream"
        assert first["model"] == "up-ok"
        assert (first["prompt_tokens"], first["completion_tokens"], first["credits"]) == (11, 7, 7.25)
        assert (first["cache_hit"], second["cache_hit"], second["credits"]) == (False, True, 0.0)
        assert len(first["trace_id"]) == 32
        assert USER_KEY not in log_capture.getvalue().decode()

    def test_failed_inference_logs_an_error(self, client, log_capture):
        """A 502 writes an ERROR inference line naming the provider and the status."""
        client.post(URL, json=chat("up-500"), headers=AUTH)
        line = next(line for line in log_capture.lines() if line["message"] == "Inference failed")
        assert (line["level"], line["provider"], line["status"]) == ("ERROR", "upstream", "error")

    def test_traceparent_names_the_provider_span(self, client, gateway_telemetry, span_exporter, upstream):
        """The `traceparent` sent upstream carries the request's trace id and the provider span's id."""
        client.post(URL, json=chat("up-ok", content="traceparent check"), headers=AUTH)
        gateway_telemetry.tracer_provider.force_flush()
        sent = next(
            r
            for r in reversed(upstream.requests)
            if r["body"]["messages"][0]["content"] == "traceparent check"
        )
        _, trace_id, span_id, flags = sent["headers"]["traceparent"].split("-")
        span = next(s for s in span_exporter.get_finished_spans() if s.name == "chat up-ok")
        assert (trace_id, span_id) == (
            format(span.context.trace_id, "032x"),
            format(span.context.span_id, "016x"),
        )
        assert int(flags, 16) & 1  # sampled


class TestStreamLatency:
    """`up-paced` streams with known timing: role chunk at once, text after 0.4 s, then 0.08 s apart."""

    @pytest.fixture
    def streamed(self, client):
        response = client.post(URL, json=chat("up-paced", stream=True), headers=AUTH)
        assert response.status_code == 200
        assert response.text.endswith("data: [DONE]\n\n")
        return response

    def test_histograms_land_in_the_right_buckets(self, streamed, gateway_telemetry):
        """TTFT ~0.4 s is in (0.3, 0.5]; TPOT 0.08 s in (0.075, 0.1]; one observation each, none for a
        non-streamed call."""
        labels = {"provider": "upstream", "model": "up-paced"}

        def bucket(name, le):
            return sample(gateway_telemetry, f"{name}_bucket", **labels, le=le)

        ttft = "model_inference_time_to_first_token_seconds"
        tpot = "model_inference_time_per_output_token_seconds"
        assert (bucket(ttft, "0.3"), bucket(ttft, "0.5"), bucket(ttft, "+Inf")) == (0.0, 1.0, 1.0)
        assert (bucket(tpot, "0.075"), bucket(tpot, "0.1"), bucket(tpot, "+Inf")) == (0.0, 1.0, 1.0)
        assert 0.4 <= sample(gateway_telemetry, f"{ttft}_sum", **labels) < 0.5

    def test_non_streamed_calls_record_no_stream_latency(self, client, gateway_telemetry):
        """A whole answer has no honest time to first token: nothing is observed for it."""
        client.post(URL, json=chat("up-ok"), headers=AUTH)
        labels = {"provider": "upstream", "model": "up-ok"}
        for name in ("time_to_first_token", "time_per_output_token"):
            assert sample(gateway_telemetry, f"model_inference_{name}_seconds_count", **labels) == 0.0

    def test_exemplar_carries_the_trace_id(self, streamed, client, span_exporter, gateway_telemetry):
        """Scraped as OpenMetrics, the TTFT bucket carries the request's trace id as an exemplar."""
        text = client.get("/metrics", headers=OPENMETRICS).text
        line = next(
            line
            for line in text.splitlines()
            if line.startswith("model_inference_time_to_first_token_seconds_bucket")
            and 'model="up-paced"' in line
            and 'le="0.5"' in line
        )
        gateway_telemetry.tracer_provider.force_flush()
        span = next(s for s in span_exporter.get_finished_spans() if s.name == "chat up-paced")
        assert f'trace_id="{span.context.trace_id:032x}"' in line

    def test_span_and_log_line_carry_the_figures(
        self, streamed, gateway_telemetry, span_exporter, log_capture
    ):
        """The provider span has the GenAI time to first chunk and our TTFT/TPOT; the line ttft_ms/tpot_ms."""
        gateway_telemetry.tracer_provider.force_flush()
        span = next(s for s in span_exporter.get_finished_spans() if s.name == "chat up-paced")
        assert span.attributes["gen_ai.response.time_to_first_chunk"] < 0.2  # the role chunk came at once
        assert 0.4 <= span.attributes["gatewayz.time_to_first_token"] < 0.5
        assert 0.075 < span.attributes["gatewayz.time_per_output_token"] <= 0.1
        line = next(line for line in log_capture.lines() if line["message"] == "Inference completed")
        assert 400 <= line["ttft_ms"] < 500
        assert 75 < line["tpot_ms"] <= 100
