"""/api/metrics/*: status, summary, synthetic workload (bounds, rate limit), the query catalog, health."""

from __future__ import annotations

import pytest

from support.loopback import LoopbackServer, QuietHandler
from telemetry import queries

GATEWAY_EXPOSITION = b"""# HELP fastapi_requests_total HTTP requests by method, route template and status.
# TYPE fastapi_requests_total counter
fastapi_requests_total{app_name="gatewayz",method="GET",path="/api/users/{user_id}",status_code="200"} 3.0
fastapi_requests_total{app_name="gatewayz",method="GET",path="/api/users/{user_id}",status_code="404"} 1.0
# HELP model_inference_requests_total Inference requests.
# TYPE model_inference_requests_total counter
model_inference_requests_total{provider="local",model="echo",status="success"} 2.0
"""


class _MetricsHandler(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/metrics":
            self.reply(200, self.server.exposition, "text/plain; version=0.0.4")
        else:
            self.reply(404, b"")


@pytest.fixture
def gateway_metrics():
    with LoopbackServer(_MetricsHandler, exposition=GATEWAY_EXPOSITION) as server:
        yield server


class TestStatus:
    def test_registry_ok_and_scrape_seen_after_metrics_read(self, admin):
        """Families are counted; `scrape_seen` turns true once /metrics has been read."""
        before = admin.get("/api/metrics/status").json()
        assert before["registry_ok"] is True
        assert before["families"] >= 6
        assert before["scrape_seen"] is False
        assert admin.get("/metrics").status_code == 200
        after = admin.get("/api/metrics/status").json()
        assert after["scrape_seen"] is True
        assert after["scrapes"] == 1
        assert after["last_scrape_seconds_ago"] < 5


class TestSummary:
    def test_own_families_listed_and_dead_services_reported(self, admin):
        """The admin's own families come with type and help; unreachable services say why."""
        admin.get("/health")
        body = admin.get("/api/metrics/summary").json()
        families = {family["name"]: family for family in body["families"]}
        requests = families["fastapi_requests"]
        assert requests["type"] == "counter"
        assert requests["help"].startswith("HTTP requests")
        assert requests["series"] >= 1
        assert families["fastapi_requests_duration_seconds"]["type"] == "histogram"
        services = {service["service"]: service for service in body["services"]}
        assert services["gatewayz-admin"]["status"] == "ok"
        assert services["gatewayz-api"]["status"] == "unreachable"
        assert "ConnectError" in services["gatewayz-api"]["reason"]
        assert body["family_count"] == len(body["families"])

    def test_remote_families_parsed_and_merged(self, make_admin, gateway_metrics):
        """A service's /metrics is parsed with prometheus_client: families merged by name, series summed."""
        body = make_admin(gateway_url=gateway_metrics.url).get("/api/metrics/summary").json()
        families = {family["name"]: family for family in body["families"]}
        inference = families["model_inference_requests"]
        assert (inference["type"], inference["series"], inference["services"]) == (
            "counter",
            1,
            ["gatewayz-api"],
        )
        merged = families["fastapi_requests"]
        assert merged["services"] == ["gatewayz-admin", "gatewayz-api"]
        gateway = next(service for service in body["services"] if service["service"] == "gatewayz-api")
        assert (gateway["status"], gateway["families"], gateway["series"]) == ("ok", 2, 3)

    def test_unparseable_exposition_is_reported_not_500(self, make_admin, gateway_metrics):
        """Garbage on /metrics makes that service unreachable with a reason."""
        gateway_metrics.httpd.exposition = b"this is { not an exposition\n"
        response = make_admin(gateway_url=gateway_metrics.url).get("/api/metrics/summary")
        assert response.status_code == 200
        gateway = next(
            service for service in response.json()["services"] if service["service"] == "gatewayz-api"
        )
        assert gateway["status"] == "unreachable"
        assert gateway["reason"].startswith("unparseable exposition")


class TestWorkload:
    def test_dead_gateway_reports_each_request_failed(self, admin):
        """With the gateway down the workload still answers 200, listing every failed request."""
        response = admin.post("/api/metrics/test")
        assert response.status_code == 200
        body = response.json()
        assert len(body["requests"]) == 5
        assert all(step["error"] for step in body["requests"])
        assert body["by_status"] == {"error": 5}
        assert body["skipped"] == ["chat completions: the gateway listed no model (set METRICS_TEST_MODEL)"]

    def test_missing_gateway_key_skips_chat(self, make_admin):
        """With a model but no GATEWAY_API_KEY the chat part is skipped and says which variable to set."""
        body = make_admin(metrics_test_model="echo").post("/api/metrics/test").json()
        assert body["model"] == "echo"
        assert "GATEWAY_API_KEY" in body["skipped"][0]

    def test_rate_limited_with_retry_after(self, make_admin):
        """Past METRICS_TEST_RUNS_PER_MINUTE runs the endpoint answers 429 with Retry-After."""
        client = make_admin(metrics_test_runs_per_minute=2)
        assert [client.post("/api/metrics/test").status_code for _ in range(2)] == [200, 200]
        response = client.post("/api/metrics/test")
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) > 0
        assert response.json()["error"]["type"] == "rate_limit_error"


class TestGrafanaQueries:
    def test_served_from_the_catalog(self, admin):
        """Every panel query of every dashboard, and the LogQL/TraceQL lists, come from telemetry.queries."""
        body = admin.get("/api/metrics/grafana-queries").json()
        served = [
            (board["uid"], panel["title"], panel["expr"])
            for board in body["dashboards"]
            for panel in board["panels"]
        ]
        expected = [
            (board.uid, panel.title, panel.expr) for board in queries.DASHBOARDS for panel in board.panels
        ]
        assert served == expected
        assert body["logql"] == list(queries.LOGQL_QUERIES)
        assert body["traceql"] == list(queries.TRACEQL_QUERIES)
        fastapi = body["dashboards"][0]
        assert len(fastapi["panels"]) == 8
        assert fastapi["panels"][2]["thresholds"] == [
            {"value": 1, "color": "yellow"},
            {"value": 5, "color": "red"},
        ]


class _BadPrometheus(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.reply(200, b"<html>not prometheus</html>", "text/html")


class TestMetricsHealth:
    def test_prometheus_down_is_degraded_not_500(self, admin):
        """An unreachable Prometheus: 200, degraded, every expected job missing, the reason given."""
        response = admin.get("/api/metrics/health")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "degraded"
        assert body["prometheus_reachable"] is False
        assert body["missing_jobs"] == ["gateway", "admin", "log-shipper"]
        assert body["reasons"][0].startswith("Prometheus: ConnectError")

    def test_non_prometheus_answer_is_degraded(self, make_admin):
        """Something that is not Prometheus on the URL: degraded with a reason, not a 500."""
        with LoopbackServer(_BadPrometheus) as server:
            body = make_admin(prometheus_url=server.url).get("/api/metrics/health").json()
        assert body["status"] == "degraded"
        assert body["prometheus_reachable"] is True
        assert "non-JSON" in body["reasons"][0]
