"""The admin service as users run it (`python -m admin`), with a real gateway and a real Prometheus.

Tempo and Loki are strict fakes on loopback (BACKENDS.md): both services export spans over OTLP/HTTP to the
fake Tempo, and the fake Loki answers `query_range` over the admin's own stdout, as the shipper would push it.
The log shipper is absent (a closed port), so the stack is honestly degraded.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest

from support.fake_loki_query import FakeLokiQuery, entries_from_json_lines
from support.fake_tempo import FakeTempo
from support.processes import ServiceProcess, free_port
from support.prometheus import PrometheusProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ADMIN_KEY = "integration-test-admin-key"
GATEWAY_KEY = "integration-test-gateway-key"
BEARER = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Stack:
    admin: ServiceProcess
    gateway: ServiceProcess
    prometheus: PrometheusProcess
    tempo: FakeTempo
    loki: FakeLokiQuery

    def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(method, self.admin.url + path, timeout=30.0, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("admin-stack")
    tempo = FakeTempo().start()
    # Tracing on, exported to the fake Tempo within a fraction of a second (the BSP waits 5 s by default).
    tracing = {
        "TEMPO_ENABLED": "true",
        "TEMPO_OTLP_HTTP_ENDPOINT": tempo.url,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "ENVIRONMENT": "test",
    }
    gateway = ServiceProcess(
        "gateway",
        {**tracing, "GATEWAY_DB_PATH": str(workdir / "gateway.db"), "GATEWAY_BOOTSTRAP_API_KEY": GATEWAY_KEY},
        workdir,
    )
    admin = ServiceProcess("admin", {}, workdir)
    loki = FakeLokiQuery(source=lambda: entries_from_json_lines(admin.stdout_lines())).start()
    prometheus = PrometheusProcess(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in (
                    ("gateway", gateway.port),
                    ("admin", admin.port),
                    ("log-shipper", free_port()),
                    ("tempo", tempo.port),  # its /metrics counts received and discarded spans
                )
            ],
        },
        workdir,
        free_port(),
    )
    admin.env.update(
        {
            **tracing,
            "ADMIN_API_KEY": ADMIN_KEY,
            "GATEWAY_API_KEY": GATEWAY_KEY,
            "GATEWAY_URL": gateway.url,
            "LOG_SHIPPER_URL": f"http://127.0.0.1:{free_port()}",
            "PROMETHEUS_URL": prometheus.url,
            "LOKI_URL": loki.url,
            "TEMPO_URL": tempo.url,
            "PROBE_CACHE_SECONDS": "0.2",
            "VERIFY_TIMEOUT_SECONDS": "10",
        }
    )
    gateway.start()
    admin.start()
    prometheus.start()
    try:
        yield Stack(admin=admin, gateway=gateway, prometheus=prometheus, tempo=tempo, loki=loki)
    finally:
        prometheus.stop()
        admin.stop()
        gateway.stop()
        loki.stop()
        tempo.stop()


def poll(check, timeout: float = 15.0, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


class TestPrometheus:
    def test_up_per_job_from_a_real_prometheus(self, stack):
        """Prometheus scraping gateway and admin shows them up and fresh; the absent shipper is down."""

        def scraped() -> dict | None:
            body = stack.call("GET", "/api/metrics/health").json()
            up = {target["job"] for target in body["targets"] if target["up"]}
            # Every job scraped at least once (the shipper's first, failing scrape may come last).
            return body if {"gateway", "admin"} <= up and not body["missing_jobs"] else None

        body = poll(scraped)
        assert body, stack.prometheus.log()
        assert (body["status"], body["prometheus_reachable"]) == ("degraded", True)
        assert body["down_jobs"] == ["log-shipper"]
        assert body["missing_jobs"] == []
        ages = [target["last_scrape_seconds_ago"] for target in body["targets"] if target["up"]]
        assert all(0 <= age < 5 for age in ages)

    def test_status_sees_the_scrape(self, stack):
        """After Prometheus scraped the admin, /api/metrics/status says a scrape was seen, recently."""
        body = poll(lambda: (b := stack.call("GET", "/api/metrics/status").json())["scrape_seen"] and b)
        assert body["registry_ok"] is True
        assert body["last_scrape_seconds_ago"] < 5

    def test_answers_name_no_server_software(self, stack):
        """The admin's answers carry `Date` but no `Server` header (the same `serve` as every service)."""
        answer = stack.call("GET", "/api/metrics/status")
        assert "server" not in answer.headers, answer.headers
        assert answer.headers["date"].endswith(" GMT")


class TestInstrumentationHealth:
    def test_degraded_only_by_the_absent_shipper(self, stack):
        """Gateway, Prometheus, Loki and Tempo answer ready; the closed shipper port makes it degraded."""
        body = stack.call("GET", "/api/instrumentation/health").json()
        statuses = {check["name"]: check["status"] for check in body["checks"]}
        assert statuses == {
            "gateway": "ok",
            "log-shipper": "down",
            "prometheus": "ok",
            "loki": "ok",
            "tempo": "ok",
        }
        assert body["status"] == "degraded"
        assert body["reasons"][0].startswith("log-shipper: ConnectError")


class TestTestTrace:
    def test_trace_crosses_processes_and_is_verified_in_tempo(self, stack):
        """In Tempo the gateway's server span has the admin's client span as parent; verify says complete."""
        response = stack.call("POST", "/api/instrumentation/test-trace?verify=true", headers=BEARER)
        body = response.json()
        assert response.status_code == 200, body
        check = body["tempo"]
        assert (check["found"], check["complete"]) == (True, True), check
        assert check["services"] == ["gatewayz-admin", "gatewayz-api"]
        assert check["span_count"] >= 4
        spans = stack.tempo.store.spans(body["trace_id"])
        (client,) = [s for s in spans if s["service"] == "gatewayz-admin" and s["kind"] == "SPAN_KIND_CLIENT"]
        (server,) = [s for s in spans if s["service"] == "gatewayz-api" and s["kind"] == "SPAN_KIND_SERVER"]
        assert server["parentSpanId"] == client["spanId"]
        assert server["traceId"] == b64(body["trace_id"])
        trace_id = body["trace_id"]
        stdout = stack.gateway.lines_once(lambda line: trace_id in line and "/api/users/" in line, count=1)
        logged = [msgspec.json.decode(line) for line in stdout if body["trace_id"] in line]
        assert any(line.get("endpoint") == "/api/users/{user_id}" for line in logged)


class TestTestLog:
    def test_lines_verified_in_loki(self, stack):
        """The three test lines reach (the fake) Loki from the admin's stdout and verify finds every level."""
        body = stack.call("POST", "/api/instrumentation/test-log?verify=true", headers=BEARER).json()
        assert body["loki"]["found"] is True, body
        assert body["loki"]["levels"] == ["ERROR", "INFO", "WARNING"]
        lines = [msgspec.json.decode(line) for line in stack.admin.stdout_lines() if body["trace_id"] in line]
        assert {line["level"] for line in lines if line.get("test_log")} == {"INFO", "WARNING", "ERROR"}


class TestWorkload:
    def test_workload_fills_the_gateway_families(self, stack):
        """One synthetic run through the real gateway gives every inference and cache family a sample."""
        body = stack.call("POST", "/api/metrics/test").json()
        assert [step["status_code"] for step in body["requests"]] == [
            200,
            200,
            200,
            404,
            200,
            200,
            200,
            200,
            404,
            401,
        ]
        text = httpx.get(stack.gateway.url + "/metrics", timeout=5).text
        for family in (
            "model_inference_requests_total{",
            "model_inference_duration_seconds_bucket{",
            "tokens_used_total{",
            "credits_used_total{",
            'cache_hits_total{cache_name="completions"} 1.0',
        ):
            assert family in text, family


class TestAuthOverTheNetwork:
    def test_failed_attempt_limit_is_per_client_address(self, stack):
        """Ten wrong keys from 127.0.0.2 lock that address out (429) while 127.0.0.1 still gets in."""
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport, base_url=stack.admin.url, timeout=5) as other:
            wrong = {"Authorization": "Bearer wrong-key"}
            assert {
                other.get("/api/instrumentation/config", headers=wrong).status_code for _ in range(10)
            } == {401}
            locked = other.get("/api/instrumentation/config", headers=BEARER)
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) > 0
        assert stack.call("GET", "/api/instrumentation/config", headers=BEARER).status_code == 200

    def test_key_never_in_stdout(self, stack):
        """Nothing the admin logged, across every test here, contains the admin or gateway key."""
        stdout = "\n".join(stack.admin.stdout_lines())
        assert "Admin authentication failed" in stdout
        assert ADMIN_KEY not in stdout
        assert GATEWAY_KEY not in stdout


class TestDiscards:
    def test_tempo_dropping_spans_it_acknowledged_degrades_health(self, stack):
        """Tempo at its live-trace limit answers the exporter 200 and drops spans: admin's health, via the
        real Prometheus scraping Tempo's counter, says degraded with the limit to raise; the exporter
        itself counted nothing dropped. (Last in the module: the discards stay in the 5-minute window.)"""
        stack.tempo.store.max_live_traces = 0
        try:

            def discarding() -> dict | None:
                # Spans keep coming, as under load: the counter's series appears at its first discard, and
                # increase() needs it to grow between two scrapes.
                assert httpx.get(stack.gateway.url + "/api/users/1", timeout=5).status_code == 200
                body = stack.call("GET", "/api/instrumentation/health").json()
                return body if body["discards"] else None

            body = poll(discarding, timeout=30, interval=0.5)
        finally:
            stack.tempo.store.max_live_traces = None
        assert body, stack.prometheus.log()
        assert body["status"] == "degraded"
        [discard] = [d for d in body["discards"] if d["source"] == "Tempo"]
        assert discard["reason"] == "live_traces_exceeded"
        assert discard["count"] >= 1
        assert "max_traces_per_user" in discard["fix"]
        assert any(reason.startswith("Tempo discarded") for reason in body["reasons"])
        gateway_metrics = httpx.get(stack.gateway.url + "/metrics", timeout=5).text
        assert 'otel_spans_dropped_total{reason="export_failed"} 0.0' in gateway_metrics


def test_bad_setting_stops_startup_naming_it(tmp_path):
    """`python -m admin` with a bad value exits 2 with one line naming the variable."""
    result = subprocess.run(
        [sys.executable, "-m", "admin"],
        env={"PATH": "/usr/bin:/bin", "PROBE_TIMEOUT_SECONDS": "30", "HOME": str(tmp_path)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.decode().startswith("configuration error: PROBE_TIMEOUT_SECONDS='30' is invalid")


def test_closed_ports_everywhere_still_serve(tmp_path: Path):
    """Started with every dependency pointing at closed ports, health endpoints answer degraded, never 500."""
    dead = {name: f"http://127.0.0.1:{free_port()}" for name in ("GATEWAY_URL", "PROMETHEUS_URL", "LOKI_URL")}
    admin = ServiceProcess("admin", {**dead, "ADMIN_API_KEY": ADMIN_KEY}, tmp_path).start()
    try:
        for path in ("/api/instrumentation/health", "/api/metrics/health", "/api/metrics/summary"):
            response = httpx.get(admin.url + path, timeout=10)
            assert response.status_code == 200, path
        assert httpx.get(admin.url + "/api/instrumentation/health", timeout=10).json()["status"] == "degraded"
    finally:
        # uvicorn re-raises the SIGTERM it handled after a clean shutdown.
        assert admin.stop() in {0, -15}
        assert "Application shutdown complete." in "\n".join(admin.stdout_lines())
