"""Log-shipper settings: the telemetry base plus sources, batching, spool and Loki delivery."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from telemetry.settings import HttpUrl, Port, TelemetrySettings

Bytes = Annotated[int, msgspec.Meta(gt=0)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
# Loki's default ingestion rate is 4 MB/s per tenant with a 6 MB burst: one push bigger than that
# answers 429 for ever, so a batch is kept well below it.
BatchBytes = Annotated[int, msgspec.Meta(ge=1024, le=4 * 1024 * 1024)]
# Loki refuses an entry over 262,144 bytes (`max_line_size`).
LineBytes = Annotated[int, msgspec.Meta(ge=1024, le=262_144)]
# `name=value` with a Loki label name (not one set per line, not `__`-reserved) and a value Loki takes.
StaticLabel = Annotated[
    str, msgspec.Meta(pattern=r"^(?!(service|level|environment)=)(?!__)[a-zA-Z_][a-zA-Z0-9_]*=.{1,2048}$")
]


class ShipperSettings(
    TelemetrySettings, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="upper"
):
    """Environment of the log-shipper service (SPEC §1, §4, §7)."""

    service_name: str = "gatewayz-log-shipper"
    """OpenTelemetry `service.name` and the `service` field of the shipper's own log lines."""
    port: Port = 8002
    """TCP port to listen on (`POST /ingest`, `/health`, `/ready`, `/metrics`)."""
    loki_enabled: bool = True
    """Push to Loki; `false` still reads and counts lines but pushes nothing."""
    loki_push_url: HttpUrl = "http://loki:3100/loki/api/v1/push"
    """Loki's push endpoint."""
    loki_push_encoding: Literal["protobuf", "json"] = "protobuf"
    """`protobuf`: snappy-compressed `logproto.PushRequest`, what Loki's own clients send (cheapest for the
    shipper and for Loki); `json`: gzip-compressed JSON, for a receiver that only takes JSON."""
    loki_tenant_id: str = ""
    """Sent as `X-Scope-OrgID` when set (multi-tenant or hosted Loki)."""
    loki_username: str = ""
    """Basic-auth user for hosted Loki (with `LOKI_PASSWORD`)."""
    loki_password: str = ""
    """Basic-auth password."""
    loki_bearer_token: str = ""
    """Bearer token for hosted Loki; used when no basic-auth user is set."""
    loki_timeout_seconds: Seconds = 10.0
    """Bound on one push request."""
    loki_retry_min_seconds: Seconds = 0.5
    """First retry delay; doubles per attempt (with jitter)."""
    loki_retry_max_seconds: Seconds = 300.0
    """Longest retry delay, and the cap on an honoured `Retry-After`."""
    shipper_stdin: bool = False
    """Read log lines from stdin (pipe mode)."""
    shipper_stdin_exit_at_eof: bool = True
    """When stdin closes, flush and shut down (pipe mode ends with its producer)."""
    shipper_files: tuple[str, ...] = ()
    """Globs of files to tail, comma-separated; `service=glob` names the service of non-JSON lines."""
    shipper_default_service: str = "unknown_service"
    """The `service` label of lines that do not carry one (Loki's own default name)."""
    shipper_spool_dir: str = "data/log-shipper/spool"
    """Disk spool of what Loki has not acknowledged; file positions live beside it."""
    shipper_spool_max_bytes: Bytes = 256 * 1024 * 1024
    """Spool bound; beyond it the oldest data is dropped and counted."""
    shipper_batch_bytes: BatchBytes = 1024 * 1024
    """A batch is sealed once its lines reach this many bytes."""
    shipper_batch_wait_seconds: Seconds = 1.0
    """... or once its oldest line has waited this long."""
    shipper_max_line_bytes: LineBytes = 262_144
    """Longer lines are truncated with a marker and counted."""
    shipper_ingest_max_bytes: Bytes = 5 * 1024 * 1024
    """Largest `POST /ingest` body; bigger ones answer 413."""
    shipper_static_labels: Annotated[tuple[StaticLabel, ...], msgspec.Meta(max_length=11)] = ()
    """Extra stream labels, comma-separated `name=value` pairs."""
    shipper_poll_seconds: Seconds = 0.25
    """How often idle files are checked for new lines, rotation and truncation."""
    shipper_shutdown_timeout_seconds: Seconds = 5.0
    """Bound on the final flush and push at shutdown; what is left stays in the spool."""
    shipper_own_logs: bool = False
    """Ship its own JSON lines too, straight into its batcher (on Railway nothing reads its stdout)."""

    def __post_init__(self) -> None:
        """Its own lines go either into its own spool or to another shipper, not both."""
        if self.shipper_own_logs and self.log_forward_url is not None:
            msg = "SHIPPER_OWN_LOGS=true and LOG_FORWARD_URL are exclusive: set one"
            raise ValueError(msg)
