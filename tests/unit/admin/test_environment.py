"""What /environment-variables and /config may show: the allowlist and the masking rules."""

from __future__ import annotations

import pytest

from admin.environment import environment_variables, is_allowed, is_secret, redacted_settings
from support.admin_app import admin_settings


class TestRules:
    @pytest.mark.parametrize(
        "name",
        ["ADMIN_API_KEY", "OTEL_EXPORTER_OTLP_HEADERS", "LOKI_PASSWORD", "TEMPO_AUTH", "GATEWAY_TOKEN"],
    )
    def test_secret_names(self, name):
        """Keys, tokens, passwords and OTLP headers are secret-shaped."""
        assert is_secret(name)

    @pytest.mark.parametrize("name", ["LOKI_URL", "TEMPO_ENABLED", "OTEL_TRACES_SAMPLER", "PORT"])
    def test_plain_names(self, name):
        """URLs, flags and ports are not."""
        assert not is_secret(name)

    def test_allowlist(self):
        """The stack's prefixes and a few named variables are allowed; anything else is not."""
        assert all(map(is_allowed, ["OTEL_X", "LOKI_URL", "PORT", "RAILWAY_SERVICE_NAME", "LOG_FORWARD_URL"]))
        assert not any(map(is_allowed, ["HOME", "AWS_SECRET_ACCESS_KEY", "PATH", "DATABASE_URL"]))


class TestEnvironmentVariables:
    def test_masks_by_name_by_value_and_inside_urls(self):
        """A secret name, a secret value under another name, and URL credentials are all masked."""
        env = {
            "ADMIN_API_KEY": "a-long-admin-key",
            "GATEWAY_NOTE": "has a-long-admin-key inside",
            "LOKI_URL": "http://user:pw-123456@loki:3100",
            "TEMPO_ENABLED": "true",
            "HOME": "/root",
        }
        shown = {item.name: (item.value, item.masked) for item in environment_variables(env)}
        assert shown == {
            "ADMIN_API_KEY": ("***", True),
            "GATEWAY_NOTE": ("***", True),
            "LOKI_URL": ("http://***@loki:3100", True),
            "TEMPO_ENABLED": ("true", False),
        }


class TestRedactedSettings:
    def test_short_numbers_are_not_mistaken_for_secrets(self):
        """Numeric settings and URLs stay visible; only the keys are masked."""
        settings = admin_settings(gateway_api_key="a-gateway-key-123", loki_url="http://loki:3100")
        shown = redacted_settings(settings, environ={})
        assert (shown["ADMIN_API_KEY"], shown["GATEWAY_API_KEY"]) == ("***", "***")
        assert shown["LOKI_URL"] == "http://loki:3100"
        assert shown["ADMIN_FAILED_ATTEMPTS_PER_MINUTE"] == 10
