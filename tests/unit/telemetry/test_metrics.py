"""The six HTTP families: exact names, types, labels and values."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from telemetry.metrics import UNMATCHED_PATH, HttpMetrics, create_registry

APP = "gatewayz"


def labels(method: str, path: str, **extra: str) -> dict[str, str]:
    return {"app_name": APP, "method": method, "path": path, **extra}


class TestHttpMetricsFamilies:
    def test_exact_names_types_and_labels(self, client, gateway_telemetry):
        """After one request each family is exposed with its SPEC §3 name, type and label set."""
        client.get("/items/1")
        client.get("/boom")
        text = client.get("/metrics").text
        families = {family.name: family for family in text_string_to_metric_families(text)}
        expected = {
            "fastapi_requests": ("counter", {"app_name", "method", "path", "status_code"}),
            "fastapi_requests_duration_seconds": ("histogram", {"app_name", "method", "path"}),
            "fastapi_requests_in_progress": ("gauge", {"app_name", "method", "path"}),
            "fastapi_request_size_bytes": ("histogram", {"app_name", "method", "path"}),
            "fastapi_response_size_bytes": ("histogram", {"app_name", "method", "path"}),
            "fastapi_exceptions": ("counter", {"app_name", "exception_type"}),
        }
        for name, (kind, label_names) in expected.items():
            family = families[name]
            assert family.type == kind, name
            sample_labels = {k for sample in family.samples for k in sample.labels if k != "le"}
            assert sample_labels == label_names, name
        assert "process_cpu_seconds_total" in text
        assert "process_resident_memory_bytes" in text

    def test_fresh_registry_per_instance(self):
        """Two registries never share series (no global state between tests)."""
        first, second = create_registry(), create_registry()
        HttpMetrics(first, APP).route("GET", "/a").requests(200).inc()
        HttpMetrics(second, APP)
        assert first.get_sample_value("fastapi_requests_total", labels("GET", "/a", status_code="200")) == 1
        assert (
            second.get_sample_value("fastapi_requests_total", labels("GET", "/a", status_code="200")) is None
        )


class TestPathLabel:
    def test_route_template_not_raw_path(self, client, gateway_telemetry):
        """1,000 distinct ids produce one `path` series: the template."""
        for item_id in range(1000):
            assert client.get(f"/items/{item_id}").status_code == 200
        registry = gateway_telemetry.registry
        assert (
            registry.get_sample_value(
                "fastapi_requests_total", labels("GET", "/items/{item_id}", status_code="200")
            )
            == 1000
        )
        text = client.get("/metrics").text
        request_series = [line for line in text.splitlines() if line.startswith("fastapi_requests_total{")]
        assert len(request_series) == 1

    def test_unmatched_requests_share_one_value(self, client, gateway_telemetry):
        """Random unknown paths are counted under one fixed `path` value."""
        for n in range(50):
            assert client.get(f"/random/{n}/x").status_code == 404
        registry = gateway_telemetry.registry
        assert (
            registry.get_sample_value(
                "fastapi_requests_total", labels("GET", UNMATCHED_PATH, status_code="404")
            )
            == 50
        )

    def test_405_is_unmatched_and_counted(self, client, gateway_telemetry):
        """A wrong method on a known path is still counted, with the real status."""
        assert client.delete("/items/1").status_code == 405
        registry = gateway_telemetry.registry
        assert (
            registry.get_sample_value(
                "fastapi_requests_total", labels("DELETE", UNMATCHED_PATH, status_code="405")
            )
            == 1
        )

    def test_unknown_method_is_bounded(self, client, gateway_telemetry):
        """A client-chosen method becomes `OTHER`."""
        client.request("FROBNICATE", "/items/1")
        text = client.get("/metrics").text
        assert "FROBNICATE" not in text
        assert 'method="OTHER"' in text

    def test_metrics_path_not_counted(self, client, gateway_telemetry):
        """Scrapes of /metrics do not count themselves."""
        client.get("/metrics")
        client.get("/metrics")
        assert "/metrics" not in {
            line.split('path="')[1].split('"')[0]
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("fastapi_requests_total{")
        }


class TestSizes:
    def test_request_and_streamed_response_bytes(self, client, gateway_telemetry):
        """Sizes are the bytes received and sent, including every chunk of a streamed body."""
        body = b"x" * 1000
        response = client.post("/echo", content=body)
        assert response.content == body * 3
        registry = gateway_telemetry.registry
        assert registry.get_sample_value("fastapi_request_size_bytes_sum", labels("POST", "/echo")) == 1000
        assert registry.get_sample_value("fastapi_response_size_bytes_sum", labels("POST", "/echo")) == 3000


class TestExceptions:
    def test_counted_by_type_and_answered_500(self, client, gateway_telemetry):
        """A handler exception is counted by class name; the client gets the error shape, no traceback."""
        response = client.get("/boom")
        assert response.status_code == 500
        assert response.json() == {
            "error": {"message": "Internal server error", "type": "server_error", "code": None}
        }
        assert "kaboom" not in response.text
        registry = gateway_telemetry.registry
        assert (
            registry.get_sample_value(
                "fastapi_exceptions_total", {"app_name": APP, "exception_type": "BoomError"}
            )
            == 1
        )
        assert (
            registry.get_sample_value("fastapi_requests_total", labels("GET", "/boom", status_code="500"))
            == 1
        )

    def test_http_errors_are_not_exceptions(self, client, gateway_telemetry):
        """404s are requests with a status, not exceptions."""
        client.get("/nowhere")
        text = client.get("/metrics").text
        assert "fastapi_exceptions_total{" not in text

    def test_in_progress_back_to_zero_after_error(self, client, gateway_telemetry):
        """The gauge returns to 0 after a request that raised."""
        client.get("/boom")
        assert (
            gateway_telemetry.registry.get_sample_value(
                "fastapi_requests_in_progress", labels("GET", "/boom")
            )
            == 0
        )
