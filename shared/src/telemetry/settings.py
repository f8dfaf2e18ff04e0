"""Settings loaded from the environment, validated by msgspec; one clear error per bad variable."""

from __future__ import annotations

import os
import sys
import typing
import urllib.parse
from collections.abc import Mapping
from typing import Annotated, Literal, NoReturn, TypeVar

import msgspec

from telemetry.redaction import is_secret_name, mask

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
HttpUrl = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/]+")]
RedisUrl = Annotated[str, msgspec.Meta(pattern=r"^(rediss?|unix)://\S+$")]
"""`redis://[[user]:password@]host[:port][/db]`, `rediss://` (TLS), `unix://` (a socket): redis-py's forms."""
LogLevel = Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Sampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
OtlpProtocol = Literal["grpc", "http/protobuf"]
Ratio = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]

S = TypeVar("S", bound="TelemetrySettings")

# Values normalised before validation, so `LOG_LEVEL=info` and `OTEL_TRACES_SAMPLER=AlwaysOn`-style
# capitalisation errors do not stop a deploy for a matter of case.
_UPPERCASED = frozenset({"LOG_LEVEL"})
_LOWERCASED = frozenset({"OTEL_TRACES_SAMPLER", "OTEL_EXPORTER_OTLP_PROTOCOL", "LOG_FORWARD_GZIP"})


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot run with."""


class TelemetrySettings(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="upper"
):
    """What every service reads from the environment; services subclass it with their own fields."""

    app_name: str = "gatewayz"
    """`app_name` label on the HTTP metrics; the same for every service."""
    service_name: str
    """OpenTelemetry `service.name`, the Loki `service` label and the `service` log field."""
    service_version: str = "0.1.0"
    """OpenTelemetry `service.version`."""
    environment: str = "development"
    """OpenTelemetry `deployment.environment` and the Loki `environment` label."""
    host: str = "0.0.0.0"  # noqa: S104 - services listen on every interface in containers
    """Interface to listen on."""
    port: Port
    """TCP port to listen on (Railway sets `PORT`)."""
    forwarded_allow_ips: str = "127.0.0.1"
    """Proxies whose `X-Forwarded-For` is trusted for the client address (comma-separated, `*` for any)."""
    log_level: LogLevel = "INFO"
    """Lowest level written to stdout."""
    access_log: bool = True
    """Write one "Request completed" line per request."""
    metrics_exclude_paths: tuple[str, ...] = ("/metrics",)
    """Request paths the HTTP metrics, spans and access log leave out (comma-separated)."""
    tempo_enabled: bool = True
    """Export spans over OTLP; `false` keeps tracing local (ids in logs, no exporter)."""
    tempo_otlp_http_endpoint: HttpUrl = "http://tempo:4318"
    """OTLP/HTTP base URL; `/v1/traces` is appended."""
    tempo_otlp_grpc_endpoint: HttpUrl = "http://tempo:4317"
    """OTLP/gRPC endpoint."""
    otel_exporter_otlp_protocol: OtlpProtocol = "http/protobuf"
    """Which OTLP transport to use: `grpc` or `http/protobuf` (the standard OTel variable)."""
    otel_traces_sampler: Sampler = "parentbased_always_on"
    """Sampler name, as the OpenTelemetry specification defines them."""
    otel_traces_sampler_arg: Ratio = 1.0
    """Sampling ratio for the `traceidratio` samplers."""
    otel_exporter_otlp_timeout: Annotated[int, msgspec.Meta(gt=0, le=30_000)] = 2000
    """Bound on one OTLP export in milliseconds (the standard variable; ours defaults lower than 10 s)."""
    otel_bsp_schedule_delay: Annotated[int, msgspec.Meta(gt=0, le=60_000)] = 1000
    """Milliseconds between two exports of queued spans (a full batch goes at once)."""
    otel_bsp_max_queue_size: Annotated[int, msgspec.Meta(gt=0, le=1_000_000)] = 4096
    """Spans held for export; beyond it new spans are dropped rather than slow requests."""
    otel_bsp_max_export_batch_size: Annotated[int, msgspec.Meta(gt=0, le=100_000)] = 512
    """Spans per export request."""
    log_forward_url: HttpUrl | None = None
    """The log-shipper's `POST /ingest`: every JSON line also goes there in batches (unset: stdout only)."""
    log_forward_max_lines: Annotated[int, msgspec.Meta(gt=0, le=10_000_000)] = 20_000
    """Lines waiting to be forwarded at most (the shipper slow or down); beyond it new ones are dropped."""
    log_forward_max_bytes: Annotated[int, msgspec.Meta(ge=65_536, le=1024**3)] = 16 * 1024 * 1024
    """... and their bytes at most."""
    log_forward_gzip: Literal["auto", "true", "false"] = "auto"
    """Compress batches: `auto` only when the shipper is reached over a public network, where it pays."""
    log_forward_batch_bytes: Annotated[int, msgspec.Meta(ge=1024, le=4 * 1024 * 1024)] = 512 * 1024
    """A batch is sent once its lines reach this many bytes (keep it under `SHIPPER_INGEST_MAX_BYTES`)."""
    log_forward_flush_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    """... or once this long has passed: the longest a line waits while the shipper answers."""
    log_forward_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    """Bound on one POST."""
    log_forward_retry_min_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    """First retry delay after a connection error, 429 or 5xx; doubles per attempt (with jitter)."""
    log_forward_retry_max_seconds: Annotated[float, msgspec.Meta(gt=0, le=600)] = 30.0
    """Longest retry delay, and the cap on an honoured `Retry-After`."""
    log_forward_shutdown_seconds: Annotated[float, msgspec.Meta(gt=0, le=3)] = 3.0
    """Bound on the final flush at shutdown; what is left then is counted as dropped (`shutdown`)."""


def check_url(variable: str, url: str | None) -> None:
    """Raise ValueError naming `variable` when `url` has no host or a port that is not a number.

    For `__post_init__` of settings holding a database URL; the message never repeats the URL (it may carry a
    password).
    """
    if url is None:
        return
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{variable} is invalid: its port is not a number from 1 to 65535") from None
    if port == 0:
        raise ValueError(f"{variable} is invalid: its port is not a number from 1 to 65535")
    if not parts.hostname and parts.scheme != "unix":
        raise ValueError(f"{variable} is invalid: it names no host")


def _is_sequence(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _is_sequence(typing.get_args(annotation)[0])
    return origin in {tuple, list, frozenset, set}


def _normalise(name: str, value: str) -> str:
    if name in _UPPERCASED:
        return value.upper()
    if name in _LOWERCASED:
        return value.lower()
    return value


def load_settings(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Build `cls` from environment variables; raise `SettingsError` naming the first bad one."""
    env = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    for field in msgspec.structs.fields(cls):
        value = env.get(field.encode_name)
        # An empty variable means "unset": platforms such as Railway create empty ones.
        if value is None or not value.strip():
            continue
        value = _normalise(field.encode_name, value.strip())
        if _is_sequence(field.type):
            raw[field.encode_name] = [item.strip() for item in value.split(",") if item.strip()]
        else:
            raw[field.encode_name] = value
    try:
        return msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_describe(exc, raw)) from None


def _describe(exc: msgspec.ValidationError, raw: Mapping[str, object]) -> str:
    """Turn msgspec's `Expected int >= 1 - at $.PORT` into `PORT='0' is invalid: expected int >= 1`."""
    message = str(exc)
    reason, separator, where = message.rpartition(" - at `$.")
    if not separator:  # not about one field (e.g. a __post_init__ check): msgspec's message says it all
        return message
    name = where.rstrip("`").split(".")[0].split("[")[0]
    reason = reason.replace(", got `str`", "").replace("`", "")
    reason = reason[:1].lower() + reason[1:]
    shown = "<redacted>" if is_secret_name(name) else repr(mask(name, raw.get(name)))
    return f"{name}={shown} is invalid: {reason}"


def load_settings_or_exit(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Load settings for a process entry point: a bad value prints one line and exits with status 2."""
    try:
        return load_settings(cls, environ)
    except SettingsError as exc:
        _exit_with(str(exc))


def _exit_with(message: str) -> NoReturn:
    sys.stderr.write(f"configuration error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def settings_as_dict(settings: TelemetrySettings) -> dict[str, object]:
    """Effective settings by variable name, every secret-shaped value masked."""
    encoded = msgspec.to_builtins(settings)
    return {name: mask(name, value) for name, value in sorted(encoded.items())}
