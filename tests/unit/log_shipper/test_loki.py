"""LokiClient against the strict fake: snappy protobuf and gzip JSON, tenant and auth, answers classified."""

from __future__ import annotations

import time

import msgspec
import pytest

from log_shipper.batch import Batch, push_parts
from log_shipper.labels import StreamLabels
from log_shipper.loki import LokiClient, Outcome, auth_headers, parse_retry_after
from log_shipper.parser import LineParser
from log_shipper.settings import ShipperSettings
from support.fake_loki import FakeLoki


@pytest.fixture
def loki():
    with FakeLoki() as loki:
        yield loki


def parts_for(parser, *lines: bytes) -> list[bytes]:
    batch = Batch()
    parser.parse(b"\n".join(lines), "svc", batch)
    return push_parts([batch.encode(msgspec.json.Encoder())])


def client_for(loki, metrics, **settings) -> LokiClient:
    return LokiClient(ShipperSettings(loki_push_url=loki.push_url, **settings), metrics)


class TestLokiClient:
    @pytest.mark.anyio
    async def test_push_is_accepted_by_the_strict_fake(self, loki, parser, metrics, registry):
        """What the shipper sends passes every check of the push contract, and is observed."""
        result = await client_for(loki, metrics).push(parts_for(parser, b'{"level":"INFO","m":1}', b"plain"))
        assert result.outcome is Outcome.SHIPPED
        assert set(loki.lines()) == {'{"level":"INFO","m":1}', "plain"}
        assert loki.pushes[-1].headers["content-encoding"] == "gzip"
        assert registry.get_sample_value("log_shipper_push_duration_seconds_count") == 1

    @pytest.mark.anyio
    async def test_tenant_and_bearer_token_are_sent(self, loki, parser, metrics):
        """`LOKI_TENANT_ID` → X-Scope-OrgID; `LOKI_BEARER_TOKEN` → Authorization: Bearer."""
        client = client_for(loki, metrics, loki_tenant_id="team-a", loki_bearer_token="tok")
        await client.push(parts_for(parser, b"x"))
        headers = loki.pushes[-1].headers
        assert headers["x-scope-orgid"] == "team-a"
        assert headers["authorization"] == "Bearer tok"

    @pytest.mark.anyio
    @pytest.mark.parametrize(
        ("status", "outcome", "reason"),
        [
            (429, Outcome.RETRY, "429"),
            (500, Outcome.RETRY, "5xx"),
            (503, Outcome.RETRY, "5xx"),
            (413, Outcome.SPLIT, "too_large"),
            (400, Outcome.REJECTED, "loki_rejected"),
            (401, Outcome.REJECTED, "loki_rejected"),
        ],
    )
    async def test_answers_are_classified(self, loki, parser, metrics, status, outcome, reason):
        """429/5xx retry, 413 split, any other 4xx rejected for good."""
        loki.fail_next(status, retry_after="2" if status == 429 else None)
        result = await client_for(loki, metrics).push(parts_for(parser, b"x"))
        assert (result.outcome, result.reason, result.status) == (outcome, reason, status)
        assert result.retry_after == (2.0 if status == 429 else None)

    @pytest.mark.anyio
    async def test_refused_connection_is_retryable(self, loki, parser, metrics):
        """Loki down: a connection error, to be retried."""
        client = client_for(loki, metrics)
        loki.stop()
        result = await client.push(parts_for(parser, b"x"))
        assert (result.outcome, result.reason) == (Outcome.RETRY, "connection")

    @pytest.mark.anyio
    async def test_reconnects_after_loki_restarts(self, loki, parser, metrics):
        """A kept-alive connection cut by a Loki restart does not lose the next push."""
        client = client_for(loki, metrics)
        assert (await client.push(parts_for(parser, b"a"))).outcome is Outcome.SHIPPED
        loki.stop()
        loki.start()
        assert (await client.push(parts_for(parser, b"b"))).outcome is Outcome.SHIPPED


class TestProtobufPush:
    @pytest.mark.anyio
    async def test_protobuf_segments_go_snappy_compressed(self, loki, metrics, registry):
        """A protobuf body goes as application/x-protobuf, no Content-Encoding, snappy block format; the
        strict fake decodes it and stores every line, byte for byte."""
        parser = LineParser(StreamLabels("test", {}, "svc"), 1024, protobuf=True)
        batch = Batch()
        parser.parse(b'{"level":"INFO","m":"\xc3\xa9"}\nplain', "svc", batch)
        result = await client_for(loki, metrics).push(push_parts([batch.encode_protobuf()]))
        assert result.outcome is Outcome.SHIPPED
        headers = loki.pushes[-1].headers
        assert headers["content-type"] == "application/x-protobuf"
        assert "content-encoding" not in headers
        assert set(loki.lines()) == {'{"level":"INFO","m":"é"}', "plain"}
        assert registry.get_sample_value("log_shipper_push_duration_seconds_count") == 1

    @pytest.mark.anyio
    async def test_tenant_and_auth_on_protobuf_pushes_too(self, loki, metrics):
        """The tenant and credentials go with either format."""
        parser = LineParser(StreamLabels("test", {}, "svc"), 1024, protobuf=True)
        batch = Batch()
        parser.parse(b"x", "svc", batch)
        client = client_for(loki, metrics, loki_tenant_id="team-a", loki_username="u", loki_password="p")
        await client.push(push_parts([batch.encode_protobuf()]))
        headers = loki.pushes[-1].headers
        assert (headers["x-scope-orgid"], headers["authorization"]) == ("team-a", "Basic dTpw")


class TestHeaders:
    def test_basic_auth_wins_over_bearer(self):
        """With a username, basic auth is used (hosted Loki's usual form)."""
        settings = ShipperSettings(loki_username="u", loki_password="p", loki_bearer_token="t")
        assert auth_headers(settings)["Authorization"] == "Basic dTpw"

    def test_no_tenant_no_auth_by_default(self):
        """A plain local Loki gets neither header."""
        headers = auth_headers(ShipperSettings())
        assert "X-Scope-OrgID" not in headers
        assert "Authorization" not in headers

    def test_retry_after_seconds_and_dates(self):
        """Retry-After as seconds or as an HTTP date; garbage is ignored."""
        assert parse_retry_after("5") == 5.0
        date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
        assert 55 < (parse_retry_after(date) or 0) <= 61
        assert parse_retry_after("soon") is None
        assert parse_retry_after(None) is None
