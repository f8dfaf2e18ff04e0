"""Admin settings: the telemetry base plus where the stack's parts live and how the admin API is guarded."""

from __future__ import annotations

from typing import Annotated

import msgspec

from telemetry.settings import HttpUrl, Port, RedisUrl, TelemetrySettings, check_url

Seconds = Annotated[float, msgspec.Meta(gt=0, le=60)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1, le=10_000)]


class AdminSettings(TelemetrySettings, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="upper"):
    """Environment of the admin service (SPEC §1, §6, §7)."""

    service_name: str = "gatewayz-admin"
    """OpenTelemetry `service.name` and the Loki `service` label."""
    port: Port = 8001
    """TCP port to listen on."""
    admin_api_key: str | None = None
    """Bearer key the admin endpoints require; unset means they answer 503 (never open)."""
    gateway_url: HttpUrl = "http://gateway:8000"
    """Base URL of the gateway (probed, and driven by the synthetic workload and test trace)."""
    gateway_api_key: str | None = None
    """A gateway user key for the synthetic chat completions (the gateway's `GATEWAY_BOOTSTRAP_API_KEY`)."""
    log_shipper_url: HttpUrl = "http://log-shipper:8002"
    """Base URL of the log shipper."""
    prometheus_url: HttpUrl = "http://prometheus:9090"
    """Base URL of Prometheus' HTTP API."""
    loki_url: HttpUrl = "http://loki:3100"
    """Base URL of Loki's HTTP API (readiness and `query_range`)."""
    loki_enabled: bool = True
    """Logs go to Loki; `false` reports Loki as disabled instead of probing it."""
    loki_push_url: HttpUrl = "http://loki:3100/loki/api/v1/push"
    """Where the log shipper pushes (reported by `/api/instrumentation/loki/status`)."""
    tempo_url: HttpUrl = "http://tempo:3200"
    """Base URL of Tempo's query API (readiness and `/api/traces/{id}`)."""
    prometheus_jobs: tuple[str, ...] = ("gateway", "admin", "log-shipper")
    """Prometheus `job`s expected to be scraped (comma-separated; deploy/prometheus names them so)."""
    probe_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=2)] = 2.0
    """Bound on one probe of a dependency."""
    probe_cache_seconds: Annotated[float, msgspec.Meta(ge=0, le=60)] = 5.0
    """How long probe results are reused, so health endpoints cannot amplify load."""
    verify_timeout_seconds: Seconds = 15.0
    """How long `?verify=true` polls Tempo or Loki for the test trace or log lines."""
    admin_failed_attempts_per_minute: PositiveInt = 10
    """Failed admin authentications a client may make per minute before it gets 429."""
    redis_url: RedisUrl | None = None
    """Redis shared by every admin replica for the failed-auth limit; unset means each counts on its own."""
    metrics_test_runs_per_minute: PositiveInt = 6
    """Synthetic workloads `POST /api/metrics/test` may start per minute (all clients together)."""
    metrics_test_model: str | None = None
    """Model the synthetic chat completions use; default: the first local model in `/v1/models`."""

    def __post_init__(self) -> None:
        """Check REDIS_URL's host and port here, so a typo stops startup naming the variable."""
        check_url("REDIS_URL", self.redis_url)
