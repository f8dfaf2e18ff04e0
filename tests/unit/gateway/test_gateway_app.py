"""The gateway app as wired by create_app: routes, probes, metrics and the error shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.app import create_app
from support.processes import modules_loaded


@pytest.fixture
def client(gateway_settings, gateway_telemetry) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(gateway_settings, gateway_telemetry)) as client:
        yield client


class TestRoutes:
    def test_demo_user(self, client):
        """User 1 exists on a fresh start and its profile is public."""
        response = client.get("/api/users/1")
        assert response.status_code == 200
        assert response.json()["id"] == 1

    def test_unknown_user_is_404_in_error_shape(self, client):
        """A missing user answers 404 with the documented error document."""
        response = client.get("/api/users/999")
        assert response.status_code == 404
        assert response.json() == {
            "error": {"message": "user 999 not found", "type": "not_found_error", "code": None}
        }

    def test_non_integer_user_id_is_404(self, client):
        """A non-integer id matches no route: 404 in the error shape, not a 500."""
        response = client.get("/api/users/abc")
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"

    def test_probes(self, client):
        """/health and /ready answer 200."""
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").status_code == 200

    def test_metrics_after_user_lookup(self, client):
        """The issue's done-when: a lookup shows up under its template."""
        client.get("/api/users/1")
        text = client.get("/metrics").text
        assert (
            'fastapi_requests_total{app_name="gatewayz",method="GET",path="/api/users/{user_id}",'
            'status_code="200"} 1.0' in text
        )


_SERVE_WITH_SQLITE = """
import sys
from gateway.app import create_app
from gateway.settings import GatewaySettings
from litestar.testing import TestClient
settings = GatewaySettings(gateway_db_path=sys.argv[1], environment="test")
with TestClient(create_app(settings)) as client:
    assert client.get("/ready").status_code == 200
print("loaded:", *[name for name in ("asyncpg", "gateway.store.postgres", "redis") if name in sys.modules])
"""


def test_the_embedded_defaults_never_load_the_postgresql_or_redis_drivers(tmp_path):
    """Started and served on SQLite and the in-process cache (no DATABASE_URL, no REDIS_URL), the gateway has
    imported neither asyncpg (~2 MB of RSS) nor redis-py (~20 MB): they load only when their URL is set. A
    fresh interpreter: this one has imported both."""
    assert modules_loaded(_SERVE_WITH_SQLITE, tmp_path, str(tmp_path / "gateway.db")) == []
