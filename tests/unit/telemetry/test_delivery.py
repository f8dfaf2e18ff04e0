"""The forwarder's HTTP transport: NDJSON to `/ingest`, gzip where it pays, statuses to outcomes."""

from __future__ import annotations

import gzip
from collections import deque
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest

from support.loopback import LoopbackServer, QuietHandler
from support.processes import free_port
from telemetry.delivery import Delivery, HttpTransport, Outcome, gzip_pays

ACK = Delivery(Outcome.ACKED, "200")


def line(n: int, pad: int = 0) -> bytes:
    return msgspec.json.encode({"seq": n, "pad": "x" * pad}) + b"\n"


class Receiver(QuietHandler):
    server: Any

    def do_POST(self) -> None:  # noqa: N802
        body = self.read_body()
        self.server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        status, headers = self.server.answers.popleft() if self.server.answers else (200, {})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def receiver() -> Iterator[LoopbackServer]:
    with LoopbackServer(Receiver, requests=[], answers=deque()) as server:
        yield server


class TestHttpTransport:
    def test_small_bodies_go_plain_large_ones_gzip(self, receiver):
        """NDJSON as written; gzip (Content-Encoding) from 1 KiB on; `?service=` names the sender."""
        transport = HttpTransport(receiver.url + "/ingest", "gatewayz-api", 2.0, gzip=True)
        assert transport.send([line(1), line(2)], 2.0) == ACK
        lines = [line(n, pad=100) for n in range(50)]
        assert transport.send(lines, 2.0).outcome is Outcome.ACKED
        (path, headers, body), (_, big_headers, big_body) = receiver.httpd.requests
        assert parse_qs(urlsplit(path).query) == {"service": ["gatewayz-api"]}
        assert body == line(1) + line(2)
        assert "content-encoding" not in headers
        assert big_headers["content-encoding"] == "gzip"
        assert gzip.decompress(big_body) == b"".join(lines)
        transport.close()

    def test_gzip_off_sends_large_bodies_plain(self, receiver):
        """With gzip off (the default on private networks) a large body goes as it is."""
        transport = HttpTransport(receiver.url + "/ingest", "gatewayz-api", 2.0, gzip=False)
        lines = [line(n, pad=100) for n in range(50)]
        assert transport.send(lines, 2.0) == ACK
        ((_, headers, body),) = receiver.httpd.requests
        assert "content-encoding" not in headers
        assert body == b"".join(lines)
        transport.close()

    @pytest.mark.parametrize(
        ("url", "pays"),
        [
            ("http://log-shipper.railway.internal:8002/ingest", False),
            ("http://log-shipper:8002/ingest", False),
            ("http://127.0.0.1:8002/ingest", False),
            ("http://[::1]:8002/ingest", False),
            ("http://10.0.3.7:8002/ingest", False),
            ("http://shipper.local/ingest", False),
            ("https://logs.example.com/ingest", True),
            ("http://1.1.1.1:8002/ingest", True),
        ],
    )
    def test_gzip_pays_only_across_a_public_network(self, url, pays):
        """`LOG_FORWARD_GZIP=auto`: compress for public hosts, not for loopback, private or internal ones."""
        assert gzip_pays(url) is pays

    def test_statuses_map_to_outcomes(self, receiver):
        """200 acks; 413 splits; 429 and 5xx retry (with Retry-After); any other status is a rejection."""
        receiver.httpd.answers.extend(
            [(413, {}), (429, {"Retry-After": "2"}), (503, {}), (400, {}), (204, {})]
        )
        transport = HttpTransport(receiver.url + "/ingest?service=x", "ignored", 2.0)
        results = [transport.send([line(0)], 2.0) for _ in range(5)]
        assert [(r.outcome, r.reason) for r in results] == [
            (Outcome.TOO_LARGE, "413"),
            (Outcome.RETRY, "429"),
            (Outcome.RETRY, "5xx"),
            (Outcome.REJECTED, "400"),
            (Outcome.REJECTED, "204"),
        ]
        assert results[1].retry_after == 2.0
        assert "service=x" in receiver.httpd.requests[0][0]
        transport.close()

    def test_nothing_listening_is_a_connection_error(self):
        """A closed port is retried as `connection`."""
        transport = HttpTransport(f"http://127.0.0.1:{free_port()}/ingest", "gatewayz-api", 1.0)
        assert transport.send([line(0)], 1.0).reason == "connection"
        transport.close()
