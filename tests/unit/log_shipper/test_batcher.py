"""LogBatcher: seals by size and on demand, spools in order, saves positions after the batch they cover."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from log_shipper.batcher import LogBatcher, SpoolWriteError
from log_shipper.positions import Position, Positions
from log_shipper.spool import Spool


class StaticSource:
    """A source whose position is whatever the test sets."""

    def __init__(self) -> None:
        self.offset = 0

    def checkpoint(self) -> dict[str, Position]:
        return {"/logs/app.log": Position(1, 2, self.offset)}


def batcher_for(tmp_path, parser, metrics, *, spool=True, batch_bytes=1 << 20, wait=30.0):
    spool_ = Spool(tmp_path / "spool", 1 << 30, lambda _s: None) if spool else None
    if spool_ is not None:
        spool_.open()
    (tmp_path / "spool").mkdir(exist_ok=True)
    positions = Positions(tmp_path / "spool" / "positions.json")
    batcher = LogBatcher(
        parser=parser, spool=spool_, positions=positions, metrics=metrics, batch_bytes=batch_bytes, wait=wait
    )
    return batcher, spool_, positions


class TestLogBatcher:
    @pytest.mark.anyio
    async def test_flush_writes_one_segment_then_positions(self, tmp_path, parser, metrics):
        """After flush the lines are a segment on disk and the source's position is saved."""
        batcher, spool, positions = batcher_for(tmp_path, parser, metrics)
        source = StaticSource()
        batcher.watch(source)
        source.offset = 20
        await batcher.add(b'{"level":"INFO","n":1}\n{"level":"INFO","n":2}', "file", "svc")
        assert len(spool) == 0
        await batcher.flush()
        [segment] = spool.take(1 << 20)
        body = msgspec.json.decode(b"[" + spool.read(segment) + b"]")
        assert [v[1] for v in body[0]["values"]] == ['{"level":"INFO","n":1}', '{"level":"INFO","n":2}']
        assert segment.lines == 2
        assert positions.load() == {"/logs/app.log": Position(1, 2, 20)}

    @pytest.mark.anyio
    async def test_full_batch_seals_by_itself(self, tmp_path, parser, metrics):
        """Reaching the batch size seals without waiting for the timer."""
        batcher, spool, _ = batcher_for(tmp_path, parser, metrics, batch_bytes=1024)
        await batcher.add(
            b"\n".join(b'{"level":"INFO","pad":"%s"}' % (b"x" * 100) for _ in range(20)), "file", "s"
        )
        assert len(spool) == 1

    @pytest.mark.anyio
    async def test_timer_seals_an_old_batch(self, tmp_path, parser, metrics):
        """A batch whose first line waited `wait` seconds is sealed by the background task."""
        batcher, spool, _ = batcher_for(tmp_path, parser, metrics, wait=0.05)
        task = asyncio.create_task(batcher.run())
        await batcher.add(b'{"level":"INFO"}', "http", "s")
        await asyncio.sleep(0.3)
        task.cancel()
        assert len(spool) == 1

    @pytest.mark.anyio
    async def test_concurrent_flushes_share_one_seal(self, tmp_path, parser, metrics):
        """Group commit: requests that added lines before a seal started all return after that one seal."""
        batcher, spool, _ = batcher_for(tmp_path, parser, metrics)
        generations = [await batcher.add(b'{"level":"INFO","i":%d}' % i, "http", "s") for i in range(5)]
        await asyncio.gather(*(batcher.flush(g) for g in generations))
        assert len(spool) == 1
        assert spool.lines == 5

    @pytest.mark.anyio
    async def test_disk_error_keeps_the_lines_and_retries(self, tmp_path, parser, metrics, monkeypatch):
        """A failed spool write raises (ingest answers 503) but loses nothing: the next flush writes it."""
        batcher, spool, _ = batcher_for(tmp_path, parser, metrics)

        def refuse(_path, _data):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("log_shipper.batcher.write_durably", refuse)
        await batcher.add(b"kept\nalso kept", "http", "s")
        with pytest.raises(SpoolWriteError):
            await batcher.flush()
        assert len(spool) == 0
        monkeypatch.undo()
        await batcher.add(b"later", "http", "s")
        await batcher.flush()
        assert spool.lines == 3
        assert len(spool) == 2

    @pytest.mark.anyio
    async def test_loki_disabled_counts_and_drops(self, tmp_path, parser, metrics, registry):
        """With Loki off, lines are still read and counted, then dropped as `loki_disabled`."""
        batcher, _, _ = batcher_for(tmp_path, parser, metrics, spool=False)
        await batcher.add(b"a\nb\nc", "stdin", "s")
        await batcher.flush()
        assert registry.get_sample_value("log_shipper_lines_read_total", {"source": "stdin"}) == 3
        assert registry.get_sample_value("log_shipper_dropped_lines_total", {"reason": "loki_disabled"}) == 3

    @pytest.mark.anyio
    async def test_read_metrics_count_lines_and_truncations(self, tmp_path, parser, metrics, registry):
        """Lines and bytes read per source, truncated lines counted."""
        batcher, _, _ = batcher_for(tmp_path, parser, metrics)
        await batcher.add(b"short\n" + b"y" * 5000, "http", "s")
        assert registry.get_sample_value("log_shipper_lines_read_total", {"source": "http"}) == 2
        assert registry.get_sample_value("log_shipper_truncated_lines_total") == 1
