"""SpoolSender: at least once — retry 429/5xx/connection errors, split on 413, drop (counted) other 4xx."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgspec
import pytest

from log_shipper.batch import Batch, push_parts
from log_shipper.labels import StreamLabels
from log_shipper.loki import Outcome, PushResult
from log_shipper.parser import LineParser
from log_shipper.sender import SpoolSender
from log_shipper.spool import Spool, write_durably
from telemetry.retry import Backoff


class FakePusher:
    """Answers pushes from a script of results, then success; records every body."""

    def __init__(self, *results: PushResult) -> None:
        self.results = list(results)
        self.bodies: list[bytes] = []

    async def push(self, parts: Sequence[bytes]) -> PushResult:
        self.bodies.append(b"".join(parts))
        if self.results:
            return self.results.pop(0)
        return PushResult(Outcome.SHIPPED, 204, "ok", sent_bytes=10)


def segment_body(*lines: str) -> bytes:
    values = [[str(1_000 + i), text] for i, text in enumerate(lines)]
    return msgspec.json.encode({"stream": {"service": "s"}, "values": values})


@pytest.fixture
def spool(tmp_path) -> Spool:
    spool = Spool(tmp_path, 10_000_000, lambda _s: None)
    spool.open()
    return spool


def spooled(spool: Spool, *lines: str):
    body = segment_body(*lines)
    segment = spool.reserve(len(lines))
    write_durably(segment.path, body)
    spool.append(segment, body)
    return segment


def sender_for(spool, pusher, metrics) -> SpoolSender:
    return SpoolSender(
        spool=spool, pusher=pusher, metrics=metrics, batch_bytes=1 << 20, backoff=Backoff(0.001, 0.01)
    )


def retry(status: int | None, reason: str, after: float | None = None) -> PushResult:
    return PushResult(Outcome.RETRY, status, reason, retry_after=after)


async def deliver_all(sender: SpoolSender, spool: Spool) -> None:
    segments = spool.take(1 << 20)
    await sender.deliver(segments)
    spool.ack(segments)


class TestDelivery:
    @pytest.mark.anyio
    async def test_retries_until_loki_takes_it(self, spool, metrics, registry):
        """429, 503 and a refused connection are retried; the batch ships once, counted."""
        pusher = FakePusher(retry(429, "429", 0.0), retry(503, "5xx"), retry(None, "connection"))
        spooled(spool, "a", "b")
        await deliver_all(sender_for(spool, pusher, metrics), spool)
        assert len(pusher.bodies) == 4
        assert registry.get_sample_value("log_shipper_lines_shipped_total") == 2
        assert registry.get_sample_value("log_shipper_retries_total", {"reason": "429"}) == 1
        assert registry.get_sample_value("log_shipper_retries_total", {"reason": "5xx"}) == 1
        assert registry.get_sample_value("log_shipper_retries_total", {"reason": "connection"}) == 1
        assert len(spool) == 0

    @pytest.mark.anyio
    async def test_400_is_dropped_and_counted_never_retried(self, spool, metrics, registry):
        """Loki may have stored part of a 400'd batch: it is dropped with a reason, not pushed again."""
        pusher = FakePusher(PushResult(Outcome.REJECTED, 400, "loki_rejected", detail="timestamp too old"))
        spooled(spool, "a", "b", "c")
        await deliver_all(sender_for(spool, pusher, metrics), spool)
        assert len(pusher.bodies) == 1
        assert registry.get_sample_value("log_shipper_dropped_lines_total", {"reason": "loki_rejected"}) == 3
        assert registry.get_sample_value("log_shipper_batches_total", {"result": "dropped"}) == 1

    @pytest.mark.anyio
    async def test_413_splits_the_batch(self, spool, metrics, registry):
        """A batch Loki finds too large is halved and each half pushed; all lines arrive."""
        too_large = PushResult(Outcome.SPLIT, 413, "too_large")
        pusher = FakePusher(too_large)
        spooled(spool, "a", "b", "c", "d")
        await deliver_all(sender_for(spool, pusher, metrics), spool)
        halves = [msgspec.json.decode(body)["streams"] for body in pusher.bodies[1:]]
        lines = [value[1] for streams in halves for stream in streams for value in stream["values"]]
        assert lines == ["a", "b", "c", "d"]
        assert registry.get_sample_value("log_shipper_lines_shipped_total") == 4
        assert registry.get_sample_value("log_shipper_batches_total", {"result": "split"}) == 1

    @pytest.mark.anyio
    async def test_single_entry_still_too_large_is_dropped(self, spool, metrics, registry):
        """One entry Loki keeps refusing with 413 cannot be split further: dropped as too_large."""
        too_large = PushResult(Outcome.SPLIT, 413, "too_large")
        spooled(spool, "only")
        await deliver_all(sender_for(spool, FakePusher(too_large), metrics), spool)
        assert registry.get_sample_value("log_shipper_dropped_lines_total", {"reason": "too_large"}) == 1

    @pytest.mark.anyio
    async def test_consecutive_segments_share_one_push(self, spool, metrics):
        """Small spooled batches are pushed together, one valid body."""
        spooled(spool, "a")
        spooled(spool, "b")
        pusher = FakePusher()
        await deliver_all(sender_for(spool, pusher, metrics), spool)
        [body] = pusher.bodies
        assert len(msgspec.json.decode(body)["streams"]) == 2

    @pytest.mark.anyio
    async def test_a_spool_of_both_formats_is_pushed_format_by_format(self, spool, metrics, registry):
        """JSON segments left by a run before LOKI_PUSH_ENCODING changed and protobuf ones after: one push
        per run of one format, each a valid body of its own, every line shipped."""
        spooled(spool, "a")
        protobuf = LineParser(StreamLabels("test", {}, "svc"), 1024, protobuf=True)
        batch = Batch()
        protobuf.parse(b"b\nc", "svc", batch)
        body = batch.encode_protobuf()
        segment = spool.reserve(2)
        write_durably(segment.path, body)
        spool.append(segment, body)
        spooled(spool, "d")
        pusher = FakePusher()
        await deliver_all(sender_for(spool, pusher, metrics), spool)
        assert len(pusher.bodies) == 3
        assert msgspec.json.decode(pusher.bodies[0])["streams"][0]["values"][0][1] == "a"
        assert pusher.bodies[1] == body
        assert msgspec.json.decode(pusher.bodies[2])["streams"][0]["values"][0][1] == "d"
        assert registry.get_sample_value("log_shipper_lines_shipped_total") == 4

    @pytest.mark.anyio
    async def test_run_releases_segments_when_cancelled(self, spool, metrics):
        """Cancelled mid-retry (shutdown), the batch stays in the spool for the next start."""
        pusher = FakePusher(*[retry(503, "5xx", 10.0)] * 3)
        spooled(spool, "a")
        sender = sender_for(spool, pusher, metrics)
        sender.backoff = Backoff(1, 60)
        task = asyncio.create_task(sender.run())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(spool) == 1
        assert len(spool.take(100)) == 1

    @pytest.mark.anyio
    async def test_unreadable_segment_is_dropped_and_the_rest_shipped(self, spool, metrics, registry):
        """A segment whose file vanished is counted as dropped; the others of the push still ship."""
        gone = spooled(spool, "lost")
        spooled(spool, "kept")
        gone.body = None
        gone.path.unlink()
        pusher = FakePusher()
        await deliver_all(sender_for(spool, pusher, metrics), spool)
        assert (
            registry.get_sample_value("log_shipper_dropped_lines_total", {"reason": "spool_unreadable"}) == 1
        )
        assert registry.get_sample_value("log_shipper_lines_shipped_total") == 1

    def test_push_parts_make_one_body(self):
        """Segments joined by commas inside the streams array."""
        assert b"".join(push_parts([b"{}", b"{}"])) == b'{"streams":[{},{}]}'


class TestBackoff:
    def test_doubles_with_jitter_up_to_the_cap(self):
        """Delays grow 2x per attempt, each in [d/2, d], never over the maximum."""
        backoff = Backoff(0.5, 300)
        delays = [backoff.next() for _ in range(12)]
        for attempt, delay in enumerate(delays):
            ceiling = min(300, 0.5 * 2**attempt)
            assert ceiling / 2 <= delay <= ceiling

    def test_retry_after_is_honoured_but_capped(self):
        """Loki's Retry-After wins over the computed delay, up to the maximum."""
        backoff = Backoff(0.5, 300)
        assert backoff.next(7.0) == 7.0
        assert backoff.next(9999.0) == 300

    def test_reset_starts_over(self):
        """After a success the next failure waits the minimum again."""
        backoff = Backoff(1, 300)
        for _ in range(5):
            backoff.next()
        backoff.reset()
        assert backoff.next() <= 1
