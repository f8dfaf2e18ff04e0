"""Gateway settings: the telemetry base plus the gateway's own wiring variables."""

from __future__ import annotations

from typing import Annotated

import msgspec

from telemetry.settings import Port, RedisUrl, TelemetrySettings, check_url

ApiKey = Annotated[str, msgspec.Meta(min_length=8, max_length=256, pattern=r"^\S+$")]
DatabaseUrl = Annotated[str, msgspec.Meta(pattern=r"^postgres(ql)?://\S+$")]
"""`postgresql://user:password@host:port/database[?sslmode=require...]`, as Railway and libpq write it."""


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
    """SQLite user/credit store; created with demo user 1 on first start (unused with DATABASE_URL)."""
    database_url: DatabaseUrl | None = None
    """PostgreSQL shared by every replica for users, keys, credits and usage; unset means SQLite."""
    gateway_db_pool_size: Annotated[int, msgspec.Meta(ge=1, le=200)] = 10
    """Most PostgreSQL connections one replica opens."""
    gateway_db_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    """Bound on connecting to PostgreSQL and on any one statement; past it the request answers 503."""
    gateway_db_connect_seconds: Annotated[float, msgspec.Meta(ge=0, le=600)] = 30.0
    """How long a starting gateway waits for PostgreSQL to answer before it gives up (exit status 1)."""
    gateway_db_synchronous_commit: bool = False
    """Wait for PostgreSQL's WAL flush at each commit; off (default) risks the last ~0.6 s of charges, only in
    a crash of the database server itself and only in users' favour."""
    gateway_hold_seconds: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 30.0
    """Lease of a credit hold: renewed while its request runs; a dead replica's holds go back after it."""
    redis_url: RedisUrl | None = None
    """Redis shared by every replica for the completion cache; unset means the in-process cache."""
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

    def __post_init__(self) -> None:
        """Check the URLs' host and port here, so a typo stops startup naming the variable."""
        check_url("DATABASE_URL", self.database_url)
        check_url("REDIS_URL", self.redis_url)
