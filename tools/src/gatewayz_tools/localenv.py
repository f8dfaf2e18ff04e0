"""Where the local stack keeps its state, and the keys it generates once (never committed)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

RUN_DIR = Path(os.environ.get("GATEWAYZ_RUN_DIR", ".run"))
"""Git-ignored directory for local state: generated keys, Prometheus TSDB, spool, databases."""

DEFAULT_URLS = {
    "gateway": "http://127.0.0.1:8000",
    "admin": "http://127.0.0.1:8001",
    "log_shipper": "http://127.0.0.1:8002",
    "prometheus": "http://127.0.0.1:9090",
    "loki": "http://127.0.0.1:3100",
    "tempo": "http://127.0.0.1:3200",
    "grafana": "http://127.0.0.1:3000",
}
"""Base URLs of the local stack; each can be overridden by `<NAME>_URL`."""


def url(name: str) -> str:
    """The base URL of a component: `<NAME>_URL` from the environment, else the local default."""
    return os.environ.get(f"{name.upper()}_URL", DEFAULT_URLS[name]).rstrip("/")


def read_dotenv(path: Path = Path(".env")) -> dict[str, str]:
    """`KEY=value` lines of a .env file (comments and placeholders `<...>` ignored)."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip().strip("'\"")
        if value and not value.startswith("<"):
            values[key.strip()] = value
    return values


def local_key(name: str, prefix: str) -> str:
    """A key from the environment or .env, else one generated once and kept in `.run/<name>`."""
    variable = name.upper().replace("-", "_")
    if value := os.environ.get(variable) or read_dotenv().get(variable):
        return value
    path = RUN_DIR / name
    if path.exists():
        return path.read_text().strip()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    key = prefix + secrets.token_urlsafe(24)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key
