"""Secrets planted in the environment never appear in any admin response (or log line), on any endpoint."""

from __future__ import annotations

import pytest

from admin.settings import AdminSettings
from support.admin_app import admin_settings, closed_url
from telemetry import Telemetry, load_settings

PLANTED = {
    "ADMIN_API_KEY": "planted-admin-key-7c1e",
    "GATEWAY_API_KEY": "planted-gateway-key-5d2a",
    "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Basic planted-otlp-3b9f",
    "LOKI_PASSWORD": "planted-loki-pass-8e4d",
    "TEMPO_AUTH": "planted-tempo-auth-2f7b",
    # A secret value under an innocent allowlisted name, and credentials inside a URL.
    "GATEWAY_NOTE": "copied by mistake: planted-admin-key-7c1e",
    "LOKI_URL": "http://grafana:planted-url-pw-6a1c@" + closed_url().removeprefix("http://"),
}
MARKERS = (
    "planted-admin-key",
    "planted-gateway-key",
    "planted-otlp",
    "planted-loki-pass",
    "planted-tempo-auth",
)
MARKERS += ("planted-url-pw",)


@pytest.fixture
def planted(monkeypatch, make_admin, log_capture):
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    from_env = load_settings(AdminSettings, PLANTED)
    overrides = {
        "admin_api_key": from_env.admin_api_key,
        "gateway_api_key": from_env.gateway_api_key,
        "loki_url": from_env.loki_url,
        "metrics_test_model": "echo",
    }
    telemetry = Telemetry.create(admin_settings(**overrides), log_stream=log_capture)
    yield make_admin(telemetry=telemetry, **overrides)
    telemetry.tracer_provider.shutdown()


def test_no_endpoint_reveals_a_planted_secret(planted, log_capture):
    """Every route in the OpenAPI schema, /metrics and the schema, called with the key: nothing leaks."""
    client = planted
    headers = {"Authorization": f"Bearer {PLANTED['ADMIN_API_KEY']}"}
    schema = client.get("/schema/openapi.json").json()
    calls = [(method.upper(), path) for path, item in schema["paths"].items() for method in item]
    assert len(calls) >= 15
    texts = [client.get("/schema/openapi.json").text, client.get("/metrics").text]
    for method, path in calls:
        for suffix in ("", "?verify=true") if method == "POST" else ("",):
            response = client.request(method, path + suffix, headers=headers)
            assert response.status_code < 500, (method, path, response.text)
            texts.append(response.text)
            texts.append(str(response.headers))
    texts.append(log_capture.getvalue().decode())
    leaked = [(marker, text[:200]) for text in texts for marker in MARKERS if marker in text]
    assert leaked == []


def test_masked_values_are_shown_as_masked(planted):
    """The planted variables are listed (so an operator knows they are set) with their values masked."""
    headers = {"Authorization": f"Bearer {PLANTED['ADMIN_API_KEY']}"}
    variables = planted.get("/api/instrumentation/environment-variables", headers=headers).json()["variables"]
    shown = {item["name"]: item for item in variables}
    for name in (
        "ADMIN_API_KEY",
        "GATEWAY_API_KEY",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "LOKI_PASSWORD",
        "GATEWAY_NOTE",
    ):
        assert (shown[name]["value"], shown[name]["masked"]) == ("***", True)
    assert shown["LOKI_URL"]["value"].startswith("http://***@127.0.0.1:")
    assert shown["LOKI_URL"]["masked"] is True
