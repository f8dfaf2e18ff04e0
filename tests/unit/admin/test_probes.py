"""GET /api/instrumentation/health: bounded concurrent cached probes; degraded (never 500) when down."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import parse_qs

import pytest

from support.fake_loki_query import FakeLokiQuery
from support.fake_tempo import FakeTempo
from support.loopback import LoopbackServer, QuietHandler


class _ReadyHandler(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.server.hits.append(self.path)
        if self.path in {"/ready", "/-/ready"}:
            self.reply(200, b"ready")
        else:
            self.reply(404, b"not found")


@pytest.fixture
def ready_server():
    with LoopbackServer(_ReadyHandler, hits=[]) as server:
        yield server


@pytest.fixture
def tempo():
    with FakeTempo() as fake:
        yield fake


@pytest.fixture
def loki():
    with FakeLokiQuery() as fake:
        yield fake


@pytest.fixture
def hanging_url():
    """A port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def everything_up(ready_server, tempo, loki) -> dict[str, object]:
    return {
        "gateway_url": ready_server.url,
        "log_shipper_url": ready_server.url,
        "prometheus_url": ready_server.url,
        "loki_url": loki.url,
        "tempo_url": tempo.url,
        "tempo_enabled": True,
    }


class TestInstrumentationHealth:
    def test_all_dead_is_degraded_with_reasons_not_500(self, admin):
        """Every dependency on a closed port: 200, status degraded, one reason per part."""
        response = admin.get("/api/instrumentation/health")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "degraded"
        down = {check["name"]: check for check in body["checks"] if check["status"] == "down"}
        assert set(down) == {"gateway", "log-shipper", "prometheus", "loki"}
        assert all("ConnectError" in check["reason"] for check in down.values())
        assert len(body["reasons"]) == 4

    def test_all_up_is_ok(self, make_admin, ready_server, tempo, loki):
        """Every part answering 200 on its readiness path makes the answer ok."""
        body = (
            make_admin(**everything_up(ready_server, tempo, loki)).get("/api/instrumentation/health").json()
        )
        assert body["status"] == "ok"
        assert [check["name"] for check in body["checks"]] == [
            "gateway",
            "log-shipper",
            "prometheus",
            "loki",
            "tempo",
        ]
        assert {check["status"] for check in body["checks"]} == {"ok"}
        assert "/-/ready" in ready_server.httpd.hits

    def test_not_ready_answer_is_degraded_with_its_body(self, make_admin, ready_server, tempo, loki):
        """Tempo answering 503 on /ready is reported down with the status and Tempo's words."""
        tempo.store.ready = False
        body = (
            make_admin(**everything_up(ready_server, tempo, loki)).get("/api/instrumentation/health").json()
        )
        assert body["status"] == "degraded"
        (tempo_check,) = [check for check in body["checks"] if check["name"] == "tempo"]
        assert tempo_check["http_status"] == 503
        assert "Ingester not ready" in tempo_check["reason"]

    def test_disabled_parts_are_reported_not_probed(self, make_admin, ready_server, tempo, loki):
        """LOKI_ENABLED=false and TEMPO_ENABLED=false: reported disabled, never asked, not degraded."""
        settings = {**everything_up(ready_server, tempo, loki), "loki_enabled": False, "tempo_enabled": False}
        body = make_admin(**settings).get("/api/instrumentation/health").json()
        assert body["status"] == "ok"
        statuses = {check["name"]: check["status"] for check in body["checks"]}
        assert statuses["loki"] == statuses["tempo"] == "disabled"
        assert tempo.store.requests == []
        assert loki.requests == []

    def test_hanging_dependencies_are_bounded_and_probed_concurrently(self, make_admin, hanging_url):
        """Five parts that never answer cost one probe timeout in total, not five."""
        client = make_admin(
            probe_timeout_seconds=0.5,
            gateway_url=hanging_url,
            log_shipper_url=hanging_url,
            prometheus_url=hanging_url,
            loki_url=hanging_url,
            tempo_url=hanging_url,
            tempo_enabled=True,
        )
        start = time.monotonic()
        body = client.get("/api/instrumentation/health").json()
        elapsed = time.monotonic() - start
        assert body["status"] == "degraded"
        assert all("timed out after 0.5 s" in check["reason"] for check in body["checks"])
        assert elapsed < 1.5

    def test_results_are_cached(self, make_admin, ready_server, tempo, loki):
        """Within PROBE_CACHE_SECONDS repeated health calls probe each part once."""
        client = make_admin(**everything_up(ready_server, tempo, loki), probe_cache_seconds=30)
        for _ in range(5):
            assert client.get("/api/instrumentation/health").json()["status"] == "ok"
        assert tempo.store.requests == ["GET /ready"]
        assert ready_server.httpd.hits.count("/ready") == 2  # gateway and log-shipper share the fake


class _PrometheusHandler(QuietHandler):
    """Ready, and answers instant queries: a Tempo discard for the Tempo query, nothing for the others."""

    def do_GET(self) -> None:  # noqa: N802
        path, _, query = self.path.partition("?")
        if path == "/-/ready":
            self.reply(200, b"ready")
            return
        promql = parse_qs(query).get("query", [""])[0]
        result = []
        if "tempo_discarded_spans_total" in promql and self.server.discarding:
            result = [{"metric": {"reason": "live_traces_exceeded"}, "value": [time.time(), "5012"]}]
        body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        self.reply(200, json.dumps(body).encode(), "application/json")


class TestDiscards:
    def test_tempo_discarding_degrades_health_with_the_fix(self, make_admin, ready_server, tempo, loki):
        """Every part ready, but Tempo counting live_traces_exceeded: degraded, with what to raise."""
        with LoopbackServer(_PrometheusHandler, discarding=True) as prometheus:
            settings = {**everything_up(ready_server, tempo, loki), "prometheus_url": prometheus.url}
            body = make_admin(**settings).get("/api/instrumentation/health").json()
        assert {check["status"] for check in body["checks"]} == {"ok"}
        assert body["status"] == "degraded"
        assert body["discards_checked"] is True
        [discard] = body["discards"]
        assert (discard["source"], discard["reason"], discard["count"]) == (
            "Tempo",
            "live_traces_exceeded",
            5012,
        )
        assert "max_traces_per_user" in discard["fix"]
        assert "OTEL_TRACES_SAMPLER_ARG" in discard["fix"]
        assert len(body["reasons"]) == 1
        assert body["reasons"][0].startswith("Tempo discarded 5012 spans in 5m (live_traces_exceeded): raise")

    def test_no_discards_is_ok(self, make_admin, ready_server, tempo, loki):
        """Prometheus answering empty vectors for every discard counter: ok, and said to be checked."""
        with LoopbackServer(_PrometheusHandler, discarding=False) as prometheus:
            settings = {**everything_up(ready_server, tempo, loki), "prometheus_url": prometheus.url}
            body = make_admin(**settings).get("/api/instrumentation/health").json()
        assert (body["status"], body["discards"], body["discards_checked"]) == ("ok", [], True)

    def test_prometheus_that_cannot_answer_queries_leaves_discards_unknown(self, make_admin, ready_server):
        """A Prometheus whose query API fails: discards not checked (said so), not invented."""
        body = make_admin(prometheus_url=ready_server.url).get("/api/instrumentation/health").json()
        assert (body["discards"], body["discards_checked"]) == ([], False)
