"""What the admin service may show of its environment: an allowlist, every secret-shaped value masked."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import msgspec

from telemetry.redaction import MASK, is_secret_name, mask
from telemetry.settings import TelemetrySettings, settings_as_dict

ALLOWED_PREFIXES = (
    "OTEL_",
    "LOKI_",
    "TEMPO_",
    "GATEWAY_",
    "PROMETHEUS_",
    "SHIPPER_",
    "LOG_SHIPPER_",
    "LOG_FORWARD_",
    "ADMIN_",
)
"""Variables of the stack's own families are shown (masked where secret)."""
ALLOWED_NAMES = frozenset(
    {"APP_NAME", "SERVICE_NAME", "SERVICE_VERSION", "ENVIRONMENT", "HOST", "PORT", "LOG_LEVEL", "ACCESS_LOG"}
    | {"METRICS_EXCLUDE_PATHS", "FORWARDED_ALLOW_IPS", "PYTHONUNBUFFERED", "TZ", "REDIS_URL"}
    | {"RAILWAY_ENVIRONMENT_NAME", "RAILWAY_SERVICE_NAME", "RAILWAY_PUBLIC_DOMAIN", "RAILWAY_PRIVATE_DOMAIN"}
)
"""Other variables worth seeing when diagnosing a deploy; anything else is never shown."""
# Parts of a name that mean "may hold a credential" beyond the shared list: OTLP headers carry auth.
_MIN_SECRET_LENGTH = 6
_EXTRA_SECRET_PARTS = ("HEADERS", "PASS", "PRIVATE_KEY", "SIGNATURE", "SESSION")


class EnvironmentVariable(msgspec.Struct, frozen=True, kw_only=True):
    """One allowed variable, its value masked when secret-shaped."""

    name: str
    value: str
    masked: bool


def is_allowed(name: str) -> bool:
    """True when `name` is on the allowlist (a known name or one of the stack's prefixes)."""
    return name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES)


def is_secret(name: str) -> bool:
    """True when `name` may hold a credential: the shared rule plus header and password variants."""
    upper = name.upper()
    return is_secret_name(name) or any(part in upper for part in _EXTRA_SECRET_PARTS)


def secret_values(environ: Mapping[str, str]) -> frozenset[str]:
    """Values of every secret-named variable, so the same value under an innocent name is masked too."""
    # Short values ("10", "true") would mask half the page by coincidence; keys are long.
    return frozenset(
        value for name, value in environ.items() if is_secret(name) and len(value) >= _MIN_SECRET_LENGTH
    )


def shown_value(name: str, value: str, secrets: Iterable[str]) -> tuple[str, bool]:
    """(what may be shown, whether it was masked)."""
    if is_secret(name) or any(secret in value for secret in secrets):
        return MASK, True
    shown = str(mask(name, value))
    return shown, shown != value


def environment_variables(environ: Mapping[str, str] | None = None) -> list[EnvironmentVariable]:
    """The allowed variables, sorted by name, every secret masked."""
    env = os.environ if environ is None else environ
    secrets = secret_values(env)
    out = []
    for name in sorted(env):
        if not is_allowed(name):
            continue
        value, masked = shown_value(name, env[name], secrets)
        out.append(EnvironmentVariable(name=name, value=value, masked=masked))
    return out


def redacted_settings(
    settings: TelemetrySettings, environ: Mapping[str, str] | None = None
) -> dict[str, object]:
    """Effective settings by variable name; secrets masked by name, and by value wherever they recur."""
    env = os.environ if environ is None else environ
    shown = settings_as_dict(settings)
    secrets = secret_values(env) | secret_values(
        {name: value for name, value in msgspec.to_builtins(settings).items() if isinstance(value, str)}
    )
    out: dict[str, object] = {}
    for name, value in shown.items():
        named_secret = is_secret(name) and value not in (None, "")
        recurring = isinstance(value, str) and any(secret in value for secret in secrets)
        out[name] = MASK if named_secret or recurring else value
    return out
