"""Settings, metrics, middleware, tracing and logging shared by every Gatewayz service."""

from telemetry.exposition import metrics_endpoint
from telemetry.health import health
from telemetry.service import Telemetry, instrument, serve
from telemetry.settings import SettingsError, TelemetrySettings, load_settings, load_settings_or_exit

__all__ = [
    "SettingsError",
    "Telemetry",
    "TelemetrySettings",
    "health",
    "instrument",
    "load_settings",
    "load_settings_or_exit",
    "metrics_endpoint",
    "serve",
]
