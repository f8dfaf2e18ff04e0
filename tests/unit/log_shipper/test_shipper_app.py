"""The log-shipper app as create_app wires it: /ingest, its size bound, /ready, /metrics."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from log_shipper.app import create_app
from log_shipper.settings import ShipperSettings
from support.fake_loki import FakeLoki
from telemetry import SettingsError, Telemetry, load_settings


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


class TestGzipIngest:
    def test_a_gzip_body_is_decompressed_and_shipped(self, client, loki):
        """Content-Encoding: gzip (what the services' forwarder sends): each line arrives as an entry."""
        body = b"".join(b'{"level":"INFO","service":"api","n":%d}\n' % n for n in range(50))
        response = client.post("/ingest", content=gzip.compress(body), headers={"content-encoding": "gzip"})
        assert (response.status_code, response.json()) == (200, {"accepted": 50})
        assert len(loki.wait_for(50, 5)) == 50

    def test_concatenated_gzip_members_are_one_body(self, client, loki):
        """RFC 1952: several members in a row decompress to their concatenation."""
        body = gzip.compress(b"first\n") + gzip.compress(b"second\n")
        response = client.post("/ingest", content=body, headers={"content-encoding": "gzip"})
        assert response.json() == {"accepted": 2}
        assert sorted(loki.wait_for(2, 5)) == ["first", "second"]

    def test_decompressed_size_is_bounded_413(self, client, loki):
        """A small body inflating past SHIPPER_INGEST_MAX_BYTES is refused whole; nothing is shipped."""
        bomb = gzip.compress(b"x" * 1_000_000)
        assert len(bomb) < 4096
        response = client.post("/ingest", content=bomb, headers={"content-encoding": "gzip"})
        assert response.status_code == 413
        assert "decompressed" in response.json()["error"]["message"]
        time.sleep(0.2)
        assert loki.lines() == []

    def test_corrupt_or_truncated_gzip_is_400(self, client):
        """Not gzip, or cut short: 400 in the error shape."""
        whole = gzip.compress(b"line\n" * 100)
        for body in (b"not gzip at all", whole[: len(whole) // 2]):
            response = client.post("/ingest", content=body, headers={"content-encoding": "gzip"})
            assert response.status_code == 400, body[:20]
            assert response.json()["error"]["type"] == "invalid_request_error"

    def test_other_encodings_are_415(self, client):
        """Only gzip and identity are understood; `identity` is a plain body."""
        response = client.post("/ingest", content=b"x\n", headers={"content-encoding": "br"})
        assert response.status_code == 415
        response = client.post("/ingest", content=b"x\n", headers={"content-encoding": "identity"})
        assert response.json() == {"accepted": 1}


class TestOwnLogs:
    def test_its_own_lines_reach_loki_without_a_feedback_loop(self, tmp_path, loki, log_capture):
        """SHIPPER_OWN_LOGS=true: its start-up line and its /ingest access lines arrive, in-process, and
        forwarding them makes no further requests (no line a second for ever)."""
        with client_for(
            tmp_path,
            log_capture,
            loki_push_url=loki.push_url,
            shipper_own_logs=True,
            log_forward_flush_seconds=0.05,
        ) as client:
            client.post("/ingest?service=gatewayz-api", content=b'{"service":"gatewayz-api","n":1}\n')
            own = {"service": "gatewayz-log-shipper"}
            assert any("Log shipper started" in line for line in loki.wait_for(2, 5, **own))
            assert any('"endpoint":"/ingest"' in line for line in loki.wait_for(2, 5, **own))
            settled = len(loki.lines(**own))
            time.sleep(0.5)  # ten flush ticks: a loop would have shipped more lines by now
            assert len(loki.lines(**own)) == settled
            metrics = client.get("/metrics").text
        assert 'log_shipper_lines_read_total{source="own"}' in metrics
        assert "log_forwarder_forwarded_lines_total" in metrics

    def test_own_logs_and_a_forward_url_are_exclusive(self):
        """Its own lines go to its own spool or to another shipper: setting both stops startup."""
        with pytest.raises(SettingsError, match="SHIPPER_OWN_LOGS=true and LOG_FORWARD_URL are exclusive"):
            load_settings(
                ShipperSettings, {"SHIPPER_OWN_LOGS": "true", "LOG_FORWARD_URL": "http://127.0.0.1:1/ingest"}
            )
