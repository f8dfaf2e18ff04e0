"""`/metrics` content negotiation and exemplars."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.settings import GatewaySettings
from telemetry import Telemetry

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def _request_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("fastapi_requests_total{")]


class TestNegotiation:
    def test_openmetrics_has_trace_id_exemplars(self, client, gateway_telemetry, span_exporter):
        """Asked for OpenMetrics, the request counter and duration carry the request's trace_id."""
        client.get("/items/1")
        gateway_telemetry.tracer_provider.force_flush()
        (span,) = span_exporter.get_finished_spans()
        trace_id = format(span.context.trace_id, "032x")
        response = client.get("/metrics", headers={"accept": PROMETHEUS_ACCEPT})
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        assert response.text.rstrip().endswith("# EOF")
        (counter_line,) = _request_lines(response.text)
        assert f'# {{trace_id="{trace_id}"}} 1.0' in counter_line
        bucket_exemplars = [
            line
            for line in response.text.splitlines()
            if line.startswith("fastapi_requests_duration_seconds_bucket{") and "trace_id" in line
        ]
        assert bucket_exemplars
        assert all(trace_id in line for line in bucket_exemplars)

    def test_text_format_has_no_exemplars(self, client):
        """Classic text (no Accept) never carries exemplars."""
        client.get("/items/1")
        response = client.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        assert "trace_id" not in response.text
        assert "# EOF" not in response.text

    def test_unsampled_request_has_no_exemplar(self, build_app, span_exporter, log_capture):
        """With sampling off no exemplar is attached (exemplars only point at stored traces)."""
        settings = GatewaySettings(tempo_enabled=False, otel_traces_sampler="always_off")
        telemetry = Telemetry.create(settings, exporter=span_exporter, log_stream=log_capture)
        with TestClient(build_app(telemetry)) as client:
            client.get("/items/1")
            text = client.get("/metrics", headers={"accept": OPENMETRICS}).text
        assert "trace_id" not in text
        assert _request_lines(text)


@pytest.mark.parametrize("accept", ["", "text/plain", "*/*"])
def test_plain_fallbacks(client, accept):
    """Anything but OpenMetrics gets the classic format."""
    response = client.get("/metrics", headers={"accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


def test_exporter_fixture_type(span_exporter):
    assert isinstance(span_exporter, InMemorySpanExporter)
