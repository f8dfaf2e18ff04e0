"""The admin app as wired: SPEC §6's exact endpoint table in the OpenAPI schema, probes, settings errors."""

from __future__ import annotations

import pytest

from admin.settings import AdminSettings
from support.admin_app import BEARER
from support.processes import modules_loaded
from telemetry import SettingsError, load_settings

SPEC_TABLE = {
    ("GET", "/api/metrics/status"): False,
    ("GET", "/api/metrics/summary"): False,
    ("POST", "/api/metrics/test"): False,
    ("GET", "/api/metrics/grafana-queries"): False,
    ("GET", "/api/metrics/health"): False,
    ("GET", "/api/instrumentation/health"): False,
    ("GET", "/api/instrumentation/trace-context"): False,
    ("GET", "/api/instrumentation/loki/status"): True,
    ("GET", "/api/instrumentation/tempo/status"): True,
    ("GET", "/api/instrumentation/config"): True,
    ("POST", "/api/instrumentation/test-trace"): True,
    ("POST", "/api/instrumentation/test-log"): True,
    ("GET", "/api/instrumentation/environment-variables"): True,
}
"""(method, path) → requires the admin key, exactly as SPEC §6 lists them."""


class TestOpenApi:
    def test_schema_lists_exactly_the_spec_table_plus_probes(self, admin):
        """The schema holds SPEC §6's endpoints and /health, /ready — nothing else."""
        schema = admin.get("/schema/openapi.json").json()
        routes = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
        assert routes == set(SPEC_TABLE) | {("GET", "/health"), ("GET", "/ready")}

    def test_admin_endpoints_declare_bearer_security(self, admin):
        """Exactly the admin endpoints declare the bearer scheme and their 401/429/503 error documents."""
        schema = admin.get("/schema/openapi.json").json()
        assert schema["components"]["securitySchemes"]["AdminBearer"] == {
            "type": "http",
            "scheme": "bearer",
            "description": "ADMIN_API_KEY, as `Authorization: Bearer <key>`",
        }
        for (method, path), guarded in SPEC_TABLE.items():
            operation = schema["paths"][path][method.lower()]
            assert ("security" in operation) is guarded, path
            if guarded:
                assert {"401", "429", "503"} <= set(operation["responses"]), path
                error = operation["responses"]["401"]["content"]["application/json"]["schema"]
                assert error["$ref"].endswith("/ErrorDocument")

    def test_verify_is_a_boolean_query_parameter(self, admin):
        """`verify` is documented as an optional boolean query parameter on both test endpoints."""
        schema = admin.get("/schema/openapi.json").json()
        for path in ("/api/instrumentation/test-trace", "/api/instrumentation/test-log"):
            (parameter,) = schema["paths"][path]["post"]["parameters"]
            assert (parameter["name"], parameter["in"], parameter["required"]) == ("verify", "query", False)
            assert parameter["schema"]["type"] == "boolean"


class TestProbesAndErrors:
    def test_health_ready_metrics(self, admin):
        """/health, /ready and /metrics answer 200 even with every dependency down."""
        assert admin.get("/health").json() == {"status": "ok"}
        assert admin.get("/ready").json() == {"status": "ready"}
        assert "fastapi_requests_total" in admin.get("/metrics").text

    def test_unknown_route_and_bad_query_are_json_errors(self, admin):
        """404s and validation errors use the shared error document, never a stack trace."""
        missing = admin.get("/api/metrics/nope")
        assert missing.status_code == 404
        assert set(missing.json()["error"]) == {"message", "type", "code"}
        bad = admin.post("/api/instrumentation/test-log?verify=maybe", headers=BEARER)
        assert bad.status_code == 400
        assert "verify" in bad.json()["error"]["message"]
        assert "Traceback" not in bad.text


class TestSettings:
    def test_defaults_point_at_compose_services(self):
        """Defaults are the compose service names and ports from SPEC §1."""
        settings = load_settings(AdminSettings, {})
        assert (settings.service_name, settings.port, settings.admin_api_key) == (
            "gatewayz-admin",
            8001,
            None,
        )
        assert settings.gateway_url == "http://gateway:8000"
        assert settings.log_shipper_url == "http://log-shipper:8002"
        assert settings.prometheus_url == "http://prometheus:9090"
        assert (settings.loki_url, settings.tempo_url) == ("http://loki:3100", "http://tempo:3200")

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("PROBE_TIMEOUT_SECONDS", "5"),
            ("GATEWAY_URL", "gateway:8000"),
            ("ADMIN_FAILED_ATTEMPTS_PER_MINUTE", "0"),
        ],
    )
    def test_bad_value_names_the_variable(self, name, value):
        """A bad value is refused with a message naming the variable."""
        with pytest.raises(SettingsError, match=name):
            load_settings(AdminSettings, {name: value})


_SERVE_WITHOUT_REDIS = """
import sys
from admin.app import create_app
from admin.settings import AdminSettings
from litestar.testing import TestClient
settings = AdminSettings(environment="test", tempo_enabled=False, admin_api_key="k" * 32)
with TestClient(create_app(settings)) as client:
    assert client.get("/health").status_code == 200
    assert client.get("/api/metrics/status").status_code == 200
    refused = client.get("/api/instrumentation/config", headers={"Authorization": "Bearer no"})
    assert refused.status_code == 401
print("loaded:", *[name for name in ("redis",) if name in sys.modules])
"""


def test_without_redis_url_redis_py_is_never_loaded(tmp_path):
    """Without REDIS_URL the admin serves (and limits failed logins per replica) without importing redis-py
    (~20 MB of RSS): it loads only when `REDIS_URL` is set. A fresh interpreter: this one has imported it."""
    assert modules_loaded(_SERVE_WITHOUT_REDIS, tmp_path) == []
