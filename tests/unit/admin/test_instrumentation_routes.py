"""/api/instrumentation/*: trace context, Loki/Tempo status, config, environment, test trace and test log."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from support.admin_app import BEARER, admin_settings
from support.fake_loki_query import FakeLokiQuery, entries_from_json_lines
from support.fake_tempo import FakeTempo
from telemetry import Telemetry

TRACEPARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def finished_spans(client, exporter):
    """Spans exported so far, after flushing the app's batch processor."""
    client.app.state.admin.telemetry.tracer_provider.force_flush()
    return exporter.get_finished_spans()


@pytest.fixture
def tempo():
    with FakeTempo() as fake:
        yield fake


class TestTraceContext:
    def test_ids_of_the_serving_span(self, admin, span_exporter):
        """trace_id/span_id are those of the server span that served the request."""
        body = admin.get("/api/instrumentation/trace-context").json()
        (server,) = [span for span in finished_spans(admin, span_exporter) if span.kind == SpanKind.SERVER]
        assert body["trace_id"] == format(server.context.trace_id, "032x")
        assert body["span_id"] == format(server.context.span_id, "016x")
        version, trace_id, span_id, flags = body["traceparent"].split("-")
        assert (version, trace_id, span_id) == ("00", body["trace_id"], body["span_id"])
        assert int(flags, 16) & 1  # sampled
        assert (body["sampled"], body["propagated"]) == (True, False)

    def test_incoming_traceparent_is_continued(self, admin):
        """A W3C traceparent sent in is continued: same trace id, a new span id, propagated true."""
        headers = {"traceparent": f"00-{TRACEPARENT_TRACE}-00f067aa0ba902b7-01"}
        body = admin.get("/api/instrumentation/trace-context", headers=headers).json()
        assert body["trace_id"] == TRACEPARENT_TRACE
        assert body["span_id"] != "00f067aa0ba902b7"
        assert body["propagated"] is True


class TestBackendStatus:
    def test_loki_status(self, make_admin):
        """Loki's URLs, enabled flag and readiness from a real (fake) Loki."""
        with FakeLokiQuery() as loki:
            body = (
                make_admin(loki_url=loki.url).get("/api/instrumentation/loki/status", headers=BEARER).json()
            )
        assert body["enabled"] is True
        assert body["url"] == loki.url
        assert body["push_url"] == "http://loki:3100/loki/api/v1/push"
        assert (body["ready"]["status"], body["ready"]["http_status"]) == ("ok", 200)

    def test_tempo_status(self, make_admin, tempo):
        """Tempo's query URL, OTLP endpoints, protocol, sampler and readiness."""
        client = make_admin(tempo_url=tempo.url, tempo_enabled=True, tempo_otlp_http_endpoint="http://t:4318")
        body = client.get("/api/instrumentation/tempo/status", headers=BEARER).json()
        assert body["url"] == tempo.url
        assert body["otlp_http_endpoint"] == "http://t:4318"
        assert (body["protocol"], body["sampler"]) == ("http/protobuf", "parentbased_always_on")
        assert body["ready"]["status"] == "ok"

    def test_dead_backend_is_reported_not_500(self, admin):
        """A closed Tempo port is reported down in the status, with the request answering 200."""
        response = admin.get("/api/instrumentation/loki/status", headers=BEARER)
        assert response.status_code == 200
        assert response.json()["ready"]["status"] == "down"


class TestConfig:
    def test_effective_settings_with_secrets_redacted(self, make_admin):
        """Every setting by variable name; the keys are masked, non-secret values shown as configured."""
        body = make_admin(gateway_api_key="gateway-user-key-for-tests").get(
            "/api/instrumentation/config", headers=BEARER
        )
        settings = body.json()["settings"]
        assert settings["ADMIN_API_KEY"] == "***"
        assert settings["GATEWAY_API_KEY"] == "***"
        assert settings["SERVICE_NAME"] == "gatewayz-admin"
        assert settings["ADMIN_FAILED_ATTEMPTS_PER_MINUTE"] == 10
        assert settings["LOKI_PUSH_URL"] == "http://loki:3100/loki/api/v1/push"
        assert {"GATEWAY_URL", "PROMETHEUS_URL", "LOKI_URL", "TEMPO_URL", "LOG_SHIPPER_URL"} <= set(settings)


class TestEnvironmentVariables:
    def test_allowlist_only(self, admin, monkeypatch):
        """Allowlisted variables are shown; anything else (HOME, a stray variable) is not."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "shown")
        monkeypatch.setenv("UNRELATED_THING", "hidden-value")
        body = admin.get("/api/instrumentation/environment-variables", headers=BEARER).json()
        shown = {item["name"]: item for item in body["variables"]}
        assert shown["OTEL_SERVICE_NAME"] == {"name": "OTEL_SERVICE_NAME", "value": "shown", "masked": False}
        assert "UNRELATED_THING" not in shown
        assert "HOME" not in shown


class TestTestTrace:
    def test_multi_span_trace_returned_and_exported(self, admin, span_exporter):
        """Three admin spans under a new root; the returned trace_id is theirs; a dead gateway is reported."""
        response = admin.post("/api/instrumentation/test-trace", headers=BEARER)
        assert response.status_code == 200
        body = response.json()
        spans = [
            s
            for s in finished_spans(admin, span_exporter)
            if format(s.context.trace_id, "032x") == body["trace_id"]
        ]
        by_name = {span.name: span for span in spans}
        assert set(by_name) == {"admin.test_trace", "admin.test_trace.prepare", "GET /api/users/{user_id}"}
        root = by_name["admin.test_trace"]
        assert root.parent is None
        assert by_name["admin.test_trace.prepare"].parent.span_id == root.context.span_id
        client = by_name["GET /api/users/{user_id}"]
        assert (client.kind, client.parent.span_id) == (SpanKind.CLIENT, root.context.span_id)
        assert client.status.status_code == StatusCode.ERROR
        assert body["gateway"]["reached"] is False
        # The request's own server span is linked, not the parent: the test trace stands alone.
        (server,) = [s for s in finished_spans(admin, span_exporter) if s.kind == SpanKind.SERVER]
        assert root.links[0].context.span_id == server.context.span_id

    def test_verify_finds_the_trace_in_tempo(self, make_admin, tempo, log_capture):
        """With spans exported over OTLP to Tempo, ?verify=true reports found and what Tempo holds."""
        overrides = {"tempo_enabled": True, "tempo_url": tempo.url, "tempo_otlp_http_endpoint": tempo.url}
        telemetry = Telemetry.create(admin_settings(**overrides), log_stream=log_capture)
        client = make_admin(telemetry=telemetry, **overrides)
        body = client.post("/api/instrumentation/test-trace?verify=true", headers=BEARER).json()
        check = body["tempo"]
        assert (check["found"], check["complete"]) == (True, True)
        assert check["services"] == ["gatewayz-admin"]
        assert check["span_count"] == 3
        assert f"GET /api/traces/{body['trace_id']}" in tempo.store.requests
        stored = tempo.store.spans(body["trace_id"])
        assert all(len(span["traceId"]) == 24 for span in stored)  # base64 of 16 bytes, as Tempo answers
        telemetry.tracer_provider.shutdown()

    def test_verify_times_out_as_not_found(self, make_admin, tempo):
        """Spans that never reach Tempo: verify gives up after VERIFY_TIMEOUT_SECONDS and says not found."""
        client = make_admin(tempo_enabled=True, tempo_url=tempo.url, verify_timeout_seconds=1.0)
        body = client.post("/api/instrumentation/test-trace?verify=true", headers=BEARER).json()
        check = body["tempo"]
        assert (check["found"], check["reason"]) == (False, "Tempo: trace not found")
        assert check["attempts"] >= 2
        assert check["waited_seconds"] <= 1.0

    def test_verify_with_tempo_disabled_says_so(self, admin):
        """TEMPO_ENABLED=false: verify answers at once that spans are not exported."""
        body = admin.post("/api/instrumentation/test-trace?verify=true", headers=BEARER).json()
        assert body["tempo"]["reason"] == "TEMPO_ENABLED=false: spans are not exported"


class TestTestLog:
    def test_three_levels_carry_the_trace_id(self, admin, log_capture):
        """INFO, WARNING and ERROR lines are written with the returned trace id."""
        body = admin.post("/api/instrumentation/test-log", headers=BEARER).json()
        lines = [line for line in log_capture.lines() if line.get("test_log")]
        assert [line["level"] for line in lines] == ["INFO", "WARNING", "ERROR"]
        assert {line["trace_id"] for line in lines} == {body["trace_id"]}
        assert all(len(line["span_id"]) == 16 for line in lines)
        assert body["query"] == f'{{service="gatewayz-admin"}} |= "{body["trace_id"]}"'
        assert body["loki"] is None

    def test_verify_finds_the_lines_in_loki(self, make_admin, log_capture):
        """?verify=true runs query_range against Loki and reports every level found."""
        source = lambda: entries_from_json_lines(log_capture.getvalue().decode().splitlines())  # noqa: E731
        with FakeLokiQuery(source=source) as loki:
            body = (
                make_admin(loki_url=loki.url)
                .post("/api/instrumentation/test-log?verify=true", headers=BEARER)
                .json()
            )
            requests = loki.requests
        check = body["loki"]
        assert (check["found"], check["levels"], check["lines"]) == (True, ["ERROR", "INFO", "WARNING"], 3)
        assert any(request.startswith("/loki/api/v1/query_range?query=") for request in requests)

    def test_verify_not_found_reports_missing_levels(self, make_admin):
        """A Loki that holds nothing: found false, with which levels are missing, bounded in time."""
        with FakeLokiQuery() as loki:
            body = (
                make_admin(loki_url=loki.url, verify_timeout_seconds=1.0)
                .post("/api/instrumentation/test-log?verify=true", headers=BEARER)
                .json()
            )
        assert body["loki"]["found"] is False
        assert body["loki"]["reason"] == "no ERROR, INFO, WARNING line yet"
