"""Admin settings for tests: a fake key and every dependency on a closed loopback port unless overridden."""

from __future__ import annotations

from typing import Any

from admin.settings import AdminSettings
from support.processes import free_port

ADMIN_KEY = "unit-test-admin-key"
"""An obviously fake key, set only in tests."""
BEARER = {"Authorization": f"Bearer {ADMIN_KEY}"}


def closed_url() -> str:
    """A loopback URL nothing listens on: a dead dependency."""
    return f"http://127.0.0.1:{free_port()}"


def admin_settings(**overrides: Any) -> AdminSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "tempo_enabled": False,
        "admin_api_key": ADMIN_KEY,
        "gateway_url": closed_url(),
        "log_shipper_url": closed_url(),
        "prometheus_url": closed_url(),
        "loki_url": closed_url(),
        "tempo_url": closed_url(),
        "probe_timeout_seconds": 0.5,
        "probe_cache_seconds": 0.0,
        "verify_timeout_seconds": 2.0,
    }
    values.update(overrides)
    return AdminSettings(**values)
