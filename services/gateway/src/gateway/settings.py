"""Gateway settings: the telemetry base plus the gateway's own wiring variables."""

from __future__ import annotations

from typing import Annotated

import msgspec

from telemetry.settings import Port, TelemetrySettings

ApiKey = Annotated[str, msgspec.Meta(min_length=8, max_length=256, pattern=r"^\S+$")]


class GatewaySettings(
    TelemetrySettings, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="upper"
):
    """Environment of the gateway service (SPEC §1, §7)."""

    service_name: str = "gatewayz-api"
    """OpenTelemetry `service.name` and the Loki `service` label."""
    port: Port = 8000
    """TCP port to listen on."""
    gateway_providers_file: str | None = None
    """Provider/model catalog (TOML); unset means the shipped one, the embedded local provider."""
    gateway_db_path: str = "data/gateway.db"
    """SQLite user/credit store; created with demo user 1 on first start."""
    gateway_bootstrap_api_key: ApiKey | None = None
    """When set, demo user 1 gets this API key (automation, tests) instead of a generated one."""
    gateway_demo_credits: Annotated[float, msgspec.Meta(ge=0)] = 10_000.0
    """Credits demo user 1 starts with on a fresh store."""
    admin_api_key: ApiKey | None = None
    """Bearer key that may read any user's balance and usage; unset means no admin access."""
    gateway_cache_max_bytes: Annotated[int, msgspec.Meta(ge=0)] = 64 * 1024 * 1024
    """Bound on the completion cache, in bytes; 0 disables it."""
    gateway_cache_ttl_seconds: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    """How long a cached completion is served."""
    gateway_provider_window_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """Rolling window of the `provider_*` health gauges and of routing by availability."""
