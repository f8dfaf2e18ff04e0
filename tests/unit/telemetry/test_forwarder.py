"""The log forwarder: bounded queue, batches, retries, drops counted exactly, bounded shutdown, no loop."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import pytest
from loguru import logger
from prometheus_client import CollectorRegistry

from gateway.settings import GatewaySettings
from telemetry import Telemetry, load_settings
from telemetry.delivery import Delivery, Outcome
from telemetry.forwarder import ForwarderCollector, ForwarderLimits, LogForwarder
from telemetry.settings import SettingsError

ACK = Delivery(Outcome.ACKED, "200")
FAST = ForwarderLimits(
    flush_seconds=0.05,
    retry_min_seconds=0.01,
    retry_max_seconds=0.05,
    shutdown_seconds=1.0,
    report_seconds=60,
)


def line(n: int, pad: int = 0) -> bytes:
    return msgspec.json.encode({"seq": n, "pad": "x" * pad}) + b"\n"


class FakeTransport:
    """Answers from a script (then `default`), records every batch it was sent."""

    def __init__(self, *script: Delivery, default: Delivery = ACK, delay: float = 0.0) -> None:
        self.script = deque(script)
        self.default = default
        self.delay = delay
        self.batches: list[list[bytes]] = []
        self.timeouts: list[float] = []
        self.closed = False
        self._lock = threading.Lock()

    def send(self, lines: Sequence[bytes], timeout: float) -> Delivery:
        self.timeouts.append(timeout)
        if self.delay:
            time.sleep(min(self.delay, timeout))
        with self._lock:
            result = self.script.popleft() if self.script else self.default
            self.batches.append(list(lines))
        return result

    def acked_seqs(self) -> list[int]:
        """Seq numbers of batches answered ACKED, in order (every batch but scripted failures is acked)."""
        return [msgspec.json.decode(item)["seq"] for batch in self.batches for item in batch]

    def close(self) -> None:
        self.closed = True


class Notes:
    """Collects the forwarder's own stdout reports."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, level: str, message: str, fields: dict[str, Any]) -> None:
        self.lines.append((level, message, fields))

    def messages(self) -> list[str]:
        return [message for _, message, _ in self.lines]


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


@pytest.fixture
def notes() -> Notes:
    return Notes()


@pytest.fixture
def started() -> Iterator[list[LogForwarder]]:
    forwarders: list[LogForwarder] = []
    yield forwarders
    for forwarder in forwarders:
        forwarder.close()


def make(transport, notes, started, **limits: Any) -> LogForwarder:
    forwarder = LogForwarder(transport, ForwarderLimits(**{**vars_of(FAST), **limits}), notes)
    started.append(forwarder)
    return forwarder


def vars_of(limits: ForwarderLimits) -> dict[str, Any]:
    return {name: getattr(limits, name) for name in limits.__dataclass_fields__}


class TestOffer:
    def test_lines_beyond_the_line_bound_are_dropped_and_counted(self, notes, started):
        """With nothing sent yet, the queue holds max_lines; every further line is counted queue_full."""
        forwarder = make(FakeTransport(), notes, started, max_lines=100)
        for n in range(250):
            forwarder.offer_locked(line(n))
        assert forwarder.queued_lines == 100
        assert forwarder.dropped()["queue_full"] == 150

    def test_the_byte_bound_applies_too(self, notes, started):
        """Lines stop being queued once their bytes would pass max_bytes."""
        forwarder = make(FakeTransport(), notes, started, max_bytes=65_536)
        big = line(0, pad=10_000)
        for _ in range(10):
            forwarder.offer_locked(big)
        assert forwarder.queued_lines == 65_536 // len(big)
        assert forwarder.queued_bytes <= 65_536
        assert forwarder.dropped()["queue_full"] == 10 - forwarder.queued_lines

    def test_offer_never_blocks_while_the_receiver_hangs(self, notes, started):
        """A transport stuck in a send does not slow the hot path: 10,000 offers take well under 100 ms."""
        forwarder = make(FakeTransport(delay=5.0), notes, started, batch_bytes=1024, max_lines=5000)
        forwarder.start()
        forwarder.offer_locked(line(0, pad=2000))  # a full batch: the worker goes into its hanging send
        assert wait_until(lambda: forwarder.transport.batches or forwarder.transport.timeouts)
        began = time.perf_counter()
        for n in range(10_000):
            forwarder.offer_locked(line(n))
        assert time.perf_counter() - began < 0.1
        assert forwarder.dropped()["queue_full"] == 10_001 - 5000


class TestWorker:
    def test_every_line_arrives_once_in_order_in_bounded_batches(self, notes, started):
        """3,000 lines arrive in order, none twice, in batches no bigger than batch_bytes."""
        transport = FakeTransport()
        forwarder = make(transport, notes, started, batch_bytes=4096)
        forwarder.start()
        for n in range(3000):
            forwarder.offer_locked(line(n))
        assert wait_until(lambda: forwarder.forwarded == 3000)
        assert transport.acked_seqs() == list(range(3000))
        assert all(sum(map(len, batch)) <= 4096 for batch in transport.batches)
        assert forwarder.queued_lines == 0

    def test_a_full_batch_leaves_before_the_flush_tick(self, notes, started):
        """Lines filling a batch are sent at once, not after flush_seconds."""
        transport = FakeTransport()
        forwarder = make(transport, notes, started, batch_bytes=2048, flush_seconds=30)
        forwarder.start()
        for n in range(200):
            forwarder.offer_locked(line(n))
        assert wait_until(lambda: forwarder.forwarded > 0, timeout=2)

    def test_a_size_wake_sends_full_batches_and_the_rest_waits_for_the_tick(self, notes, started):
        """Between ticks only full batches leave (no POST per handful of lines); the remainder goes later."""
        transport = FakeTransport()
        forwarder = make(transport, notes, started, batch_bytes=2048, flush_seconds=30)
        forwarder.start()
        lines = [line(n) for n in range(200)]
        for item in lines:
            forwarder.offer_locked(item)
        assert wait_until(lambda: forwarder.forwarded > 0)
        time.sleep(0.1)
        longest = max(map(len, lines))
        assert all(2048 - longest < sum(map(len, batch)) <= 2048 for batch in transport.batches)
        assert forwarder.queued_lines > 0
        assert forwarder.close() is True
        assert transport.acked_seqs() == list(range(200))

    def test_a_lone_line_leaves_at_the_flush_tick(self, notes, started):
        """A single line is not held back for company longer than flush_seconds."""
        transport = FakeTransport()
        forwarder = make(transport, notes, started, flush_seconds=0.1)
        forwarder.start()
        forwarder.offer_locked(line(1))
        assert wait_until(lambda: forwarder.forwarded == 1, timeout=2)

    def test_retries_connection_errors_429_and_5xx_until_acked(self, notes, started):
        """Each retryable answer is retried and counted; the lines arrive exactly once in the end."""
        transport = FakeTransport(
            Delivery(Outcome.RETRY, "connection"),
            Delivery(Outcome.RETRY, "429", retry_after=0.0),
            Delivery(Outcome.RETRY, "5xx"),
            Delivery(Outcome.RETRY, "timeout"),
        )
        forwarder = make(transport, notes, started)
        forwarder.start()
        for n in range(10):
            forwarder.offer_locked(line(n))
        assert wait_until(lambda: forwarder.forwarded == 10)
        assert forwarder.retries == {"connection": 1, "timeout": 1, "429": 1, "5xx": 1}
        assert transport.batches[-1] == [line(n) for n in range(10)]
        assert forwarder.dropped() == {"queue_full": 0, "rejected": 0, "shutdown": 0}

    def test_failures_are_reported_once_per_interval_then_recovery_once(self, notes, started):
        """Twenty failed attempts make one warning line, and the recovery one info line."""
        failures = [Delivery(Outcome.RETRY, "connection", detail="refused")] * 20
        forwarder = make(FakeTransport(*failures), notes, started, retry_max_seconds=0.01)
        forwarder.start()
        forwarder.offer_locked(line(0))
        assert wait_until(lambda: forwarder.forwarded == 1)
        assert notes.messages() == [
            "Log forwarding failing; lines wait in memory, bounded",
            "Log forwarding recovered",
        ]
        assert notes.lines[0][2]["reason"] == "connection"

    def test_a_rejected_batch_is_dropped_and_counted_not_retried(self, notes, started):
        """A 400 from the shipper is final: the batch's lines are counted as rejected, the next ones go."""
        transport = FakeTransport(Delivery(Outcome.REJECTED, "400"))
        forwarder = make(transport, notes, started)
        forwarder.start()
        for n in range(5):
            forwarder.offer_locked(line(n))
        assert wait_until(lambda: forwarder.dropped()["rejected"] == 5)
        forwarder.offer_locked(line(5))
        assert wait_until(lambda: forwarder.forwarded == 1)
        assert len(transport.batches) == 2
        assert "the shipper refused a batch" in notes.messages()[0]

    def test_a_413_splits_the_batch_until_it_fits(self, notes, started):
        """Too large: halves are sent instead; a single line still too large is dropped as rejected."""
        too_large = Delivery(Outcome.TOO_LARGE, "413")
        transport = FakeTransport(too_large, too_large, ACK, ACK, too_large)
        forwarder = make(transport, notes, started)
        forwarder.offer_locked(line(0))
        forwarder.offer_locked(line(1))
        forwarder.start()
        assert wait_until(lambda: forwarder.forwarded == 1 and forwarder.dropped()["rejected"] == 1)
        assert [len(batch) for batch in transport.batches] == [2, 1, 1]  # whole, then [0] refused, [1] taken
        assert forwarder.queued_lines == 0

    def test_queue_full_drops_are_reported_by_the_worker(self, notes, started):
        """The hot path only counts; the worker writes one line saying how many were dropped."""
        forwarder = make(FakeTransport(delay=0.5), notes, started, max_lines=10, batch_bytes=1024)
        for n in range(30):
            forwarder.offer_locked(line(n))
        forwarder.start()
        assert wait_until(lambda: "Log forwarder queue full: new lines dropped" in notes.messages())
        (fields,) = [f for _, message, f in notes.lines if message.startswith("Log forwarder queue full")]
        assert fields["dropped_since_last_report"] == 20


class TestClose:
    def test_flushes_what_is_queued(self, notes, started):
        """Lines offered just before close are sent before it returns."""
        transport = FakeTransport()
        forwarder = make(transport, notes, started, flush_seconds=30)
        forwarder.start()
        for n in range(50):
            forwarder.offer_locked(line(n))
        assert forwarder.close() is True
        assert transport.acked_seqs() == list(range(50))
        assert transport.closed
        assert notes.lines[-1][1] == "Log forwarder stopped"
        assert notes.lines[-1][2]["not_delivered_lines"] == 0

    def test_a_receiver_that_keeps_failing_cannot_hold_shutdown(self, notes, started):
        """5xx for ever: close returns within shutdown_seconds and counts what is left as `shutdown`."""
        transport = FakeTransport(default=Delivery(Outcome.RETRY, "5xx"))
        forwarder = make(transport, notes, started, shutdown_seconds=0.5, retry_min_seconds=0.05)
        forwarder.start()
        for n in range(40):
            forwarder.offer_locked(line(n))
        began = time.monotonic()
        assert forwarder.close() is False
        assert time.monotonic() - began < 0.6
        assert forwarder.dropped()["shutdown"] == 40

    def test_a_receiver_that_never_answers_cannot_hold_shutdown(self, notes, started):
        """A send hanging past the deadline is abandoned at the deadline."""
        transport = FakeTransport(delay=10.0)
        forwarder = make(transport, notes, started, shutdown_seconds=0.5)
        forwarder.start()
        forwarder.offer_locked(line(0))
        assert wait_until(lambda: transport.timeouts)
        began = time.monotonic()
        forwarder.close()
        assert time.monotonic() - began < 0.6
        assert forwarder.dropped()["shutdown"] == 1

    def test_nothing_listening_at_shutdown_ends_the_flush_at_once(self, notes, started):
        """A refused connection during the final flush is not retried: exit is not held for nothing."""
        transport = FakeTransport(default=Delivery(Outcome.RETRY, "connection"))
        forwarder = make(transport, notes, started, shutdown_seconds=1.0, flush_seconds=30)
        forwarder.start()
        forwarder.offer_locked(line(0))
        began = time.monotonic()
        forwarder.close()
        assert time.monotonic() - began < 0.3
        assert forwarder.dropped()["shutdown"] == 1

    def test_detach_runs_before_the_leftovers_are_counted(self, notes, started):
        """Lines offered until `detach` stops offers are all accounted for: forwarded or dropped."""
        transport = FakeTransport()
        forwarder = make(transport, notes, started)
        forwarder.start()
        forwarder.close(detach=lambda: forwarder.offer_locked(line(99)))
        assert forwarder.forwarded + sum(forwarder.dropped().values()) == 1


class TestTelemetryWiring:
    def test_lines_written_reach_the_forwarder_and_its_metrics(self, log_capture):
        """LOG_FORWARD_URL turns it on: each line is still written, also queued, and counted on /metrics."""
        settings = GatewaySettings(tempo_enabled=False, log_forward_url="http://127.0.0.1:9/ingest")
        telemetry = Telemetry.create(settings, log_stream=log_capture, registry=CollectorRegistry())
        forwarder = telemetry.log_forwarder
        assert forwarder is not None
        logger.info("hello")
        telemetry.log_sink.write_event("INFO", "Request completed", {"status_code": 200}, None, None)
        telemetry.log_sink.write_local("WARNING", "forwarder report", {})
        assert len(log_capture.lines()) == 3
        assert forwarder.queued_lines == 2
        assert list(forwarder._pending) == log_capture.getvalue().splitlines(keepends=True)[:2]
        registry = telemetry.registry
        assert registry.get_sample_value("log_forwarder_queued_lines") == 2
        assert registry.get_sample_value("log_forwarder_dropped_lines_total", {"reason": "queue_full"}) == 0
        assert registry.get_sample_value("log_forwarder_forwarded_lines_total") == 0
        telemetry.log_sink.forward_to(None)

    def test_lines_logged_on_the_forwarders_thread_stay_on_stdout(self, log_capture, notes, started):
        """Whatever the worker thread logs (httpx, its own reports) is written but never queued."""
        settings = GatewaySettings(tempo_enabled=False, log_forward_flush_seconds=0.05)
        telemetry = Telemetry.create(settings, log_stream=log_capture, registry=CollectorRegistry())

        class LoggingTransport(FakeTransport):
            def send(self, lines, timeout):
                logger.warning("sending a batch")  # as httpx would, on the worker thread
                return super().send(lines, timeout)

        transport = LoggingTransport()
        forwarder = telemetry.forward_logs(transport)
        assert forwarder is not None
        started.append(forwarder)
        forwarder.start()
        logger.info("first")
        assert wait_until(lambda: forwarder.forwarded == 1)
        time.sleep(0.2)  # a feedback loop would have sent "sending a batch" by now
        assert [msgspec.json.decode(item)["message"] for batch in transport.batches for item in batch] == [
            "first"
        ]
        assert any(line["message"] == "sending a batch" for line in log_capture.lines())
        telemetry.log_sink.forward_to(None)

    def test_forwarding_is_off_without_the_variable(self, log_capture):
        """No LOG_FORWARD_URL: no forwarder and no log_forwarder_* families."""
        registry = CollectorRegistry()
        telemetry = Telemetry.create(
            GatewaySettings(tempo_enabled=False), log_stream=log_capture, registry=registry
        )
        assert telemetry.log_forwarder is None
        assert registry.get_sample_value("log_forwarder_queued_lines") is None

    def test_a_bad_url_stops_startup_naming_the_variable(self):
        """LOG_FORWARD_URL must be an http(s) URL."""
        with pytest.raises(SettingsError, match="LOG_FORWARD_URL='log-shipper:8002' is invalid"):
            load_settings(GatewaySettings, {"LOG_FORWARD_URL": "log-shipper:8002"})
        with pytest.raises(SettingsError, match="LOG_FORWARD_SHUTDOWN_SECONDS"):
            load_settings(GatewaySettings, {"LOG_FORWARD_SHUTDOWN_SECONDS": "10"})

    def test_collector_exposes_every_reason_from_the_start(self, notes):
        """All drop and retry reasons are exposed at 0, so rate() alerts work before the first drop."""
        registry = CollectorRegistry()
        ForwarderCollector(LogForwarder(FakeTransport(), FAST, notes), registry)
        for reason in ("queue_full", "rejected", "shutdown"):
            assert registry.get_sample_value("log_forwarder_dropped_lines_total", {"reason": reason}) == 0
        for reason in ("connection", "timeout", "429", "5xx"):
            assert registry.get_sample_value("log_forwarder_retries_total", {"reason": reason}) == 0
