"""Settings come from the environment; a bad value names its variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.settings import GatewaySettings
from telemetry.settings import SettingsError, load_settings, settings_as_dict


class TestLoadSettings:
    def test_defaults(self):
        """With no variables set the gateway's own defaults apply."""
        settings = load_settings(GatewaySettings, {})
        assert settings.service_name == "gatewayz-api"
        assert settings.port == 8000
        assert settings.host == "0.0.0.0"
        assert settings.app_name == "gatewayz"
        assert settings.tempo_enabled is True

    def test_reads_typed_values(self):
        """Strings from the environment become ints, bools, tuples and normalised literals."""
        env = {
            "PORT": "9001",
            "TEMPO_ENABLED": "false",
            "LOG_LEVEL": "debug",
            "METRICS_EXCLUDE_PATHS": "/metrics, /health",
            "OTEL_TRACES_SAMPLER": "ParentBased_TraceIdRatio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        }
        settings = load_settings(GatewaySettings, env)
        assert settings.port == 9001
        assert settings.tempo_enabled is False
        assert settings.log_level == "DEBUG"
        assert settings.metrics_exclude_paths == ("/metrics", "/health")
        assert settings.otel_traces_sampler == "parentbased_traceidratio"
        assert settings.otel_traces_sampler_arg == 0.25

    def test_empty_variable_means_unset(self):
        """Platforms create empty variables; they do not override defaults."""
        assert load_settings(GatewaySettings, {"PORT": ""}).port == 8000

    @pytest.mark.parametrize(
        ("name", "value", "expected"),
        [
            ("PORT", "0", "PORT='0' is invalid: expected int >= 1"),
            ("PORT", "eighty", "PORT='eighty' is invalid: expected int"),
            ("TEMPO_ENABLED", "maybe", "TEMPO_ENABLED='maybe' is invalid: expected bool"),
            ("LOG_LEVEL", "loud", "LOG_LEVEL='LOUD' is invalid: invalid enum value 'LOUD'"),
            ("TEMPO_OTLP_HTTP_ENDPOINT", "tempo:4318", "TEMPO_OTLP_HTTP_ENDPOINT='tempo:4318' is invalid"),
            ("OTEL_TRACES_SAMPLER_ARG", "2", "OTEL_TRACES_SAMPLER_ARG='2' is invalid: expected float <= 1.0"),
        ],
    )
    def test_bad_value_names_the_variable(self, name, value, expected):
        """The error starts with the variable and its value, then says what was expected."""
        with pytest.raises(SettingsError) as info:
            load_settings(GatewaySettings, {name: value})
        assert str(info.value).startswith(expected)

    def test_secret_value_not_echoed(self):
        """A bad secret-shaped variable is named but its value is not repeated."""

        class WithKey(GatewaySettings, frozen=True, kw_only=True, rename="upper"):
            admin_api_key: int = 0

        with pytest.raises(SettingsError) as info:
            load_settings(WithKey, {"ADMIN_API_KEY": "hunter2-secret"})
        assert "ADMIN_API_KEY" in str(info.value)
        assert "hunter2" not in str(info.value)

    def test_whole_struct_error_keeps_its_message(self):
        """An error not tied to one field (a __post_init__ check) is reported as written, not mangled."""

        class Checked(GatewaySettings, frozen=True, kw_only=True, rename="upper"):
            def __post_init__(self) -> None:
                if self.port == 9999:
                    raise ValueError("PORT 9999 is reserved for the bench")

        with pytest.raises(SettingsError) as info:
            load_settings(Checked, {"PORT": "9999"})
        assert str(info.value) == "PORT 9999 is reserved for the bench"


class TestSettingsAsDict:
    def test_masks_secrets_and_url_credentials(self):
        """Effective config shows names and values, with credentials masked."""

        class WithKey(GatewaySettings, frozen=True, kw_only=True, rename="upper"):
            admin_api_key: str = ""

        settings = WithKey(
            admin_api_key="s3cr3t-value-123", tempo_otlp_http_endpoint="http://u:pw@tempo:4318"
        )
        shown = settings_as_dict(settings)
        assert shown["ADMIN_API_KEY"] == "***"
        assert shown["TEMPO_OTLP_HTTP_ENDPOINT"] == "http://***@tempo:4318"
        assert shown["PORT"] == 8000


class TestStartup:
    def test_bad_port_stops_startup_with_one_line(self):
        """`python -m gateway` with PORT=abc exits 2 and prints one line naming PORT."""
        result = subprocess.run(
            [sys.executable, "-m", "gateway"],
            env={"PORT": "abc", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "configuration error: PORT='abc' is invalid: expected int"
        ]


class TestDatabaseAndRedisUrls:
    @pytest.mark.parametrize(
        ("name", "value", "reason"),
        [
            ("DATABASE_URL", "mysql://user:hunter2secret@db/gatewayz", "expected str matching"),
            ("DATABASE_URL", "postgresql://user:hunter2secret@db:port/gatewayz", "port is not a number"),
            ("DATABASE_URL", "postgresql://user:hunter2secret@:5432/gatewayz", "names no host"),
            ("REDIS_URL", "http://:hunter2secret@cache:6379", "expected str matching"),
            ("REDIS_URL", "redis://:hunter2secret@cache:99999/0", "port is not a number"),
        ],
    )
    def test_a_bad_url_names_the_variable_and_never_the_password(self, name, value, reason):
        with pytest.raises(SettingsError) as caught:
            load_settings(GatewaySettings, {name: value})
        message = str(caught.value)
        assert message.startswith(name)
        assert reason in message
        assert "hunter2secret" not in message

    def test_good_urls_are_kept_and_shown_masked(self):
        settings = load_settings(
            GatewaySettings,
            {
                "DATABASE_URL": "postgresql://gatewayz:hunter2secret@db.railway.internal:5432/railway",
                "REDIS_URL": "redis://:hunter2secret@redis.railway.internal:6379/0",
            },
        )
        assert settings.database_url.endswith("@db.railway.internal:5432/railway")
        shown = settings_as_dict(settings)
        assert shown["DATABASE_URL"] == "postgresql://***@db.railway.internal:5432/railway"
        assert shown["REDIS_URL"] == "redis://***@redis.railway.internal:6379/0"
