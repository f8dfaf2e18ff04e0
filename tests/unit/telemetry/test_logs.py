"""SPEC §4 JSON lines: every field and its format, trace ids, stdlib routing, no secrets."""

from __future__ import annotations

import logging
import re
import signal
import socket
import subprocess
import sys
import time

import msgspec
from loguru import logger

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


class TestAccessLine:
    def test_every_field_and_format(self, client, log_capture):
        """One access line per request with the exact SPEC §4 fields and formats."""
        client.get("/items/42")
        (line,) = log_capture.access_lines()
        assert list(line) == [
            "timestamp",
            "level",
            "service",
            "endpoint",
            "method",
            "status_code",
            "duration_ms",
            "trace_id",
            "span_id",
            "message",
        ]
        assert TIMESTAMP.match(line["timestamp"])
        assert line["level"] == "INFO"
        assert line["service"] == "gatewayz-api"
        assert line["endpoint"] == "/items/{item_id}"
        assert line["method"] == "GET"
        assert line["status_code"] == 200
        assert isinstance(line["duration_ms"], float)
        assert line["duration_ms"] >= 0
        assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
        assert line["trace_id"] != "0" * 32
        assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
        assert line["message"] == "Request completed"

    def test_level_follows_status(self, client, log_capture):
        """4xx lines are WARNING and 5xx lines ERROR, so `level="ERROR"` finds failures."""
        client.get("/nope")
        client.get("/boom")
        levels = {line["status_code"]: line["level"] for line in log_capture.access_lines()}
        assert levels == {404: "WARNING", 500: "ERROR"}

    def test_one_line_per_request(self, client, log_capture):
        """Ten requests, ten access lines; /metrics writes none."""
        for n in range(10):
            client.get(f"/items/{n}")
        client.get("/metrics")
        assert len(log_capture.access_lines()) == 10

    def test_same_trace_id_in_span_log_and_exemplar(
        self, client, gateway_telemetry, span_exporter, log_capture
    ):
        """One request's trace_id is the same in its span, its access line and its exemplar."""
        client.get("/items/5")
        gateway_telemetry.tracer_provider.force_flush()
        (span,) = span_exporter.get_finished_spans()
        span_trace_id = format(span.context.trace_id, "032x")
        (line,) = log_capture.access_lines()
        metrics = client.get(
            "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
        ).text
        (counter_line,) = [row for row in metrics.splitlines() if row.startswith("fastapi_requests_total{")]
        exemplar_trace_id = re.search(r'trace_id="([0-9a-f]{32})"', counter_line).group(1)
        assert line["trace_id"] == span_trace_id == exemplar_trace_id
        assert line["span_id"] == format(span.context.span_id, "016x")


class TestOtherLines:
    def test_no_trace_ids_without_span(self, gateway_telemetry, log_capture):
        """Outside a request there is no span: the ids are absent, never zeros."""
        logger.info("Outside any request", extra_field=1)
        (line,) = log_capture.lines()
        assert "trace_id" not in line
        assert "span_id" not in line
        assert line["extra_field"] == 1
        assert line["message"] == "Outside any request"

    def test_stdlib_logging_routed_to_same_sink(self, gateway_telemetry, log_capture):
        """uvicorn/httpx records come out as the same JSON, with their logger name."""
        logging.getLogger("uvicorn.error").warning("port %d busy", 8000)
        (line,) = log_capture.lines()
        assert line["level"] == "WARNING"
        assert line["logger"] == "uvicorn.error"
        assert line["message"] == "port 8000 busy"
        assert line["service"] == "gatewayz-api"

    def test_secret_fields_masked(self, gateway_telemetry, log_capture):
        """A field named like a credential is never written in clear."""
        logger.info(
            "calling upstream", authorization="Bearer sk-live-abc", api_key="sk-live-abc", prompt_tokens=3
        )
        (line,) = log_capture.lines()
        assert "sk-live-abc" not in log_capture.getvalue().decode()
        assert line["authorization"] == "***"
        assert line["prompt_tokens"] == 3

    def test_exception_lines_carry_type_and_traceback(self, gateway_telemetry, log_capture):
        """logger.exception writes the exception type and traceback into the JSON."""
        try:
            raise ValueError("bad thing")
        except ValueError:
            logger.exception("it failed")
        (line,) = log_capture.lines()
        assert line["level"] == "ERROR"
        assert line["exception_type"] == "ValueError"
        assert "bad thing" in line["exception"]

    def test_level_filter(self, gateway_telemetry, log_capture):
        """DEBUG lines are dropped at the default INFO level."""
        logger.debug("noise")
        assert log_capture.lines() == []


class TestServerStdout:
    def test_uvicorn_lines_are_json(self, tmp_path):
        """A real `python -m gateway` writes only JSON lines to stdout, uvicorn's included."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"],
            env={"PORT": str(port), "HOST": "127.0.0.1", "TEMPO_ENABLED": "false", "PATH": "/usr/bin:/bin"},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        lines = [msgspec.json.decode(raw) for raw in result.stdout.splitlines()]
        messages = [line["message"] for line in lines]
        assert any("Application startup complete" in message for message in messages), result.stderr
        assert all(line["service"] == "gatewayz-api" and TIMESTAMP.match(line["timestamp"]) for line in lines)
        assert result.stderr == b""


class TestTimestamp:
    def test_utc_milliseconds_truncated_never_rolling_over(self):
        """Milliseconds are truncated, and a fraction a hair under 1 stays in its own second."""
        from telemetry.logs import JsonSink  # noqa: PLC0415

        sink = JsonSink("gatewayz-api")
        assert sink._timestamp(1_795_000_000.0) == "2026-11-18T11:06:40.000Z"
        assert sink._timestamp(1_795_000_000.1239) == "2026-11-18T11:06:40.123Z"
        assert sink._timestamp(1_795_000_000.9995) == "2026-11-18T11:06:40.999Z"
        assert sink._timestamp(1_795_000_001.5) == "2026-11-18T11:06:41.500Z"
        assert sink._timestamp(float.fromhex("0x1.fffffffffffffp-1")) == "1970-01-01T00:00:00.999Z"
