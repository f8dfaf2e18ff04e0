"""Spool: durable segments in order, rebuilt after a restart, oldest dropped and counted when full."""

from __future__ import annotations

import pytest

from log_shipper.spool import MEMORY_CACHE_BYTES, Spool, write_durably


def spooled(spool: Spool, body: bytes, lines: int = 1):
    segment = spool.reserve(lines)
    write_durably(segment.path, body)
    spool.append(segment, body)
    return segment


@pytest.fixture
def dropped():
    return []


@pytest.fixture
def spool(tmp_path, dropped) -> Spool:
    spool = Spool(tmp_path / "spool", 1000, dropped.append)
    spool.open()
    return spool


class TestSpool:
    def test_bodies_beyond_the_memory_cache_are_read_back_from_disk(self, tmp_path, monkeypatch):
        """At most MEMORY_CACHE_BYTES of bodies stay in memory; the rest come back from their files, byte
        for byte, and an acknowledged body frees its room. 4 MiB: at 16 MiB the shipper's peak RSS on a
        1,000,000-line file was 92 MB, at 4 MiB 78 MB (TARGETS.md: under 80), at the same throughput."""
        assert MEMORY_CACHE_BYTES <= 4 * 1024 * 1024
        monkeypatch.setattr("log_shipper.spool.MEMORY_CACHE_BYTES", 4000)  # the same rule, small files
        spool = Spool(tmp_path / "spool", 100_000, [].append)
        spool.open()
        segments = [spooled(spool, bytes([index]) * 1000) for index in range(6)]
        assert [segment.body is not None for segment in segments] == [True] * 4 + [False] * 2
        assert [spool.read(segment) for segment in segments] == [bytes([i]) * 1000 for i in range(6)]
        spool.ack(spool.take(1000))
        assert spooled(spool, b"z" * 1000).body is not None

    def test_segments_come_out_oldest_first_and_ack_deletes_them(self, spool):
        """FIFO order; an acknowledged segment's file is gone."""
        first = spooled(spool, b"a" * 10)
        second = spooled(spool, b"b" * 10)
        taken = spool.take(15)
        assert taken == [first]
        assert spool.read(first) == b"a" * 10
        spool.ack(taken)
        assert not first.path.exists()
        assert spool.take(100) == [second]
        assert spool.bytes == 10

    def test_restart_rebuilds_the_queue_from_disk(self, tmp_path, spool, dropped):
        """A new Spool on the same folder finds every unacknowledged segment, with its line count."""
        spooled(spool, b"one", lines=3)
        spooled(spool, b"two", lines=4)
        (spool.directory / "junk.seg.tmp").write_bytes(b"half")
        again = Spool(spool.directory, 1000, dropped.append)
        again.open()
        assert [again.read(s) for s in again.take(100)] == [b"one", b"two"]
        assert again.lines == 7
        assert not (spool.directory / "junk.seg.tmp").exists()
        assert spooled(again, b"three").seq == 3

    def test_full_spool_drops_the_oldest_and_reports_it(self, spool, dropped):
        """Over the byte bound the oldest segments go, each reported (for the drop counter)."""
        segments = [spooled(spool, bytes([65 + i]) * 400, lines=i + 1) for i in range(4)]
        assert spool.bytes <= 1000
        assert [s.lines for s in dropped] == [1, 2]
        assert not segments[0].path.exists()
        assert [s.seq for s in spool.take(10_000)] == [3, 4]

    def test_segment_being_pushed_is_not_dropped(self, spool, dropped):
        """Eviction skips the in-flight segment, so a push in progress cannot be double-counted."""
        first = spooled(spool, b"a" * 600)
        assert spool.take(10) == [first]
        spooled(spool, b"b" * 600)
        spooled(spool, b"c" * 300)
        assert dropped[0].seq == 2
        assert first.path.exists()

    def test_lag_is_the_age_of_the_oldest_segment(self, spool):
        """0 when empty, else seconds since the oldest unacknowledged batch was spooled."""
        assert spool.oldest_age() == 0.0
        segment = spooled(spool, b"x")
        segment.created -= 42
        assert 41 < spool.oldest_age() < 44
