"""Gateway settings: the telemetry base plus the gateway's own wiring variables."""

from __future__ import annotations

from telemetry.settings import Port, TelemetrySettings


class GatewaySettings(
    TelemetrySettings, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="upper"
):
    """Environment of the gateway service (SPEC §1, §7)."""

    service_name: str = "gatewayz-api"
    """OpenTelemetry `service.name` and the Loki `service` label."""
    port: Port = 8000
    """TCP port to listen on."""
