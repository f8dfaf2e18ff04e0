"""The log-shipper app as create_app wires it: /ingest, its size bound, /ready, /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from log_shipper.app import create_app
from log_shipper.settings import ShipperSettings
from support.fake_loki import FakeLoki
from telemetry import Telemetry


@pytest.fixture
def loki():
    with FakeLoki() as loki:
        yield loki


def client_for(tmp_path, log_capture, **overrides) -> TestClient[Litestar]:
    settings = ShipperSettings(
        tempo_enabled=False,
        environment="test",
        shipper_spool_dir=str(tmp_path / "spool"),
        shipper_batch_wait_seconds=0.05,
        shipper_ingest_max_bytes=4096,
        shipper_shutdown_timeout_seconds=0.5,
        **overrides,
    )
    telemetry = Telemetry.create(settings, log_stream=log_capture)
    return TestClient(create_app(settings, telemetry))


@pytest.fixture
def client(tmp_path, loki, log_capture) -> Iterator[TestClient[Litestar]]:
    with client_for(tmp_path, log_capture, loki_push_url=loki.push_url) as client:
        yield client


class TestIngest:
    def test_ndjson_lines_reach_loki(self, client, loki):
        """Each line of the body arrives as its own entry; the answer counts them."""
        body = b'{"level":"INFO","service":"api","n":1}\n{"level":"ERROR","service":"api","n":2}\n'
        response = client.post("/ingest", content=body)
        assert (response.status_code, response.json()) == (200, {"accepted": 2})
        assert len(loki.wait_for(2, 5)) == 2
        assert {s["level"] for s in loki.streams()} == {"INFO", "ERROR"}

    def test_answer_comes_after_the_lines_are_spooled(self, client, tmp_path, loki):
        """A 200 means durable: with Loki down, the lines are already a segment on disk."""
        loki.stop()
        client.post("/ingest", content=b"durable line\n")
        assert any((tmp_path / "spool").glob("*.seg"))

    def test_service_parameter_names_plain_lines(self, client, loki):
        """`?service=` is the service of lines that carry none."""
        client.post("/ingest?service=worker", content=b"plain text\n")
        loki.wait_for(1, 5)
        assert loki.streams() == [{"service": "worker", "level": "unknown", "environment": "test"}]

    def test_bad_service_parameter_is_400(self, client):
        """A service name that cannot be a label value is refused in the error shape."""
        response = client.post("/ingest?service=a%20b", content=b"x\n")
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"

    def test_body_over_the_limit_is_413(self, client, loki):
        """Beyond SHIPPER_INGEST_MAX_BYTES the request is refused whole with 413, nothing shipped."""
        response = client.post("/ingest", content=b"x" * 5000)
        assert response.status_code == 413
        time.sleep(0.2)
        assert loki.lines() == []


class TestProbes:
    def test_ready_when_loki_answers(self, client):
        """Ready, with Loki ok and the spool size."""
        response = client.get("/ready")
        assert response.status_code == 200
        assert response.json()["loki"] == "ok"

    def test_ready_says_when_loki_is_disabled(self, tmp_path, log_capture, registry):
        """LOKI_ENABLED=false: still ready, and /ready says nothing is shipped; lines are counted."""
        with client_for(tmp_path, log_capture, loki_enabled=False) as client:
            assert client.get("/ready").json() == {"status": "ready", "loki": "disabled", "shipping": False}
            client.post("/ingest", content=b"a\nb\n")
            metrics = client.get("/metrics").text
        assert 'log_shipper_lines_read_total{source="http"} 2.0' in metrics
        assert 'log_shipper_dropped_lines_total{reason="loki_disabled"} 2.0' in metrics

    def test_health(self, client):
        """Liveness."""
        assert client.get("/health").json() == {"status": "ok"}
