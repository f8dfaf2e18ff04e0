"""`LogForwarder`: the log sink's JSON lines, also sent in batches to the log-shipper's `POST /ingest`.

For hosts where nothing reads a service's stdout into Loki (Railway). The request's path only appends the
line the sink already encoded to a bounded queue (lines and bytes); one background thread batches NDJSON,
gzips it where that pays (a shipper across a public network), posts it, retries connection errors, 429 and
5xx with backoff, and counts what it has to drop. A 200 from `/ingest` (the lines are fsync'd in the
shipper's spool) is the only ack.

The forwarder's own reports are written to stdout only, never queued, so a failing shipper cannot feed it.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from telemetry.delivery import Delivery, ForwardTransport, HttpTransport, Outcome, gzip_pays
from telemetry.retry import Backoff

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from telemetry.settings import TelemetrySettings

REPORT_INTERVAL_SECONDS = 10.0
"""At most one line per kind of trouble (failing, queue full, rejected) in this long."""
DROP_REASONS = ("queue_full", "rejected", "shutdown")
RETRY_REASONS = ("connection", "timeout", "429", "5xx")

_NEVER = float("inf")
"""`_wake_at` once a size wake is pending: no further wake until the worker has taken the lines."""

Notify = Callable[[str, str, dict[str, Any]], None]
"""(level, message, fields): writes one line to stdout only (`JsonSink.write_local`)."""


@dataclass(frozen=True, slots=True)
class ForwarderLimits:
    """Bounds and timings of one forwarder (from `LOG_FORWARD_*`)."""

    max_lines: int = 20_000
    max_bytes: int = 16 * 1024 * 1024
    batch_bytes: int = 512 * 1024
    flush_seconds: float = 1.0
    timeout_seconds: float = 5.0
    retry_min_seconds: float = 0.5
    retry_max_seconds: float = 30.0
    shutdown_seconds: float = 3.0
    report_seconds: float = REPORT_INTERVAL_SECONDS

    @classmethod
    def from_settings(cls, settings: TelemetrySettings) -> ForwarderLimits:
        """The limits `settings` name."""
        return cls(
            max_lines=settings.log_forward_max_lines,
            max_bytes=settings.log_forward_max_bytes,
            batch_bytes=settings.log_forward_batch_bytes,
            flush_seconds=settings.log_forward_flush_seconds,
            timeout_seconds=settings.log_forward_timeout_seconds,
            retry_min_seconds=settings.log_forward_retry_min_seconds,
            retry_max_seconds=settings.log_forward_retry_max_seconds,
            shutdown_seconds=settings.log_forward_shutdown_seconds,
        )


class LogForwarder:
    """A bounded list of encoded lines, drained by one worker thread through a `ForwardTransport`.

    `offer` runs under `lock` — the log sink's own, which it holds for the write(2) anyway — so the hot path
    takes no lock of its own. The worker takes it only to swap the pending list for an empty one. Counters
    have one writer each: `offer` the `_in_*` counts and queue-full drops, the worker the `_out_*` counts
    (lines acknowledged or dropped) and the `_limit_*` values the `_in_*` counts may reach; what waits, the
    batch in flight included, is the difference of `_in_*` and `_out_*`.
    """

    __slots__ = (
        "_backoff",
        "_batch_bytes",
        "_carry",
        "_deadline",
        "_dropped_full",
        "_dropped_rejected",
        "_dropped_shutdown",
        "_failing",
        "_in_bytes",
        "_in_lines",
        "_last_report",
        "_limit_bytes",
        "_limit_lines",
        "_max_bytes",
        "_max_lines",
        "_notify",
        "_out_bytes",
        "_out_lines",
        "_pending",
        "_reported_full",
        "_started",
        "_stop",
        "_wake",
        "_wake_at",
        "_worker",
        "closed",
        "forwarded",
        "limits",
        "lock",
        "retries",
        "transport",
    )

    def __init__(
        self,
        transport: ForwardTransport,
        limits: ForwarderLimits,
        notify: Notify,
        lock: threading.Lock | None = None,
    ) -> None:
        self.transport = transport
        self.limits = limits
        self.lock = lock if lock is not None else threading.Lock()
        self._notify = notify
        self._pending: list[bytes] = []
        self._carry: list[bytes] = []
        self._in_lines = 0
        self._in_bytes = 0
        self._dropped_full = 0
        self._out_lines = 0
        self._out_bytes = 0
        self.forwarded = 0
        self._dropped_rejected = 0
        self._dropped_shutdown = 0
        self.retries = dict.fromkeys(RETRY_REASONS, 0)
        self._max_lines = limits.max_lines
        self._max_bytes = limits.max_bytes
        # Where `_in_*` may go before the bound is reached: the worker moves them as lines leave.
        self._limit_lines = limits.max_lines
        self._limit_bytes = limits.max_bytes
        self._batch_bytes = limits.batch_bytes
        self._backoff = Backoff(limits.retry_min_seconds, limits.retry_max_seconds)
        self._wake_at: float = limits.batch_bytes
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deadline = 0.0
        self._worker = threading.Thread(target=self._run, name="log-forward", daemon=True)
        self._started = False
        self._failing: Delivery | None = None
        self._last_report: dict[str, float] = {}
        self._reported_full = 0
        self.closed = False

    # --- the hot path ------------------------------------------------------------------------------
    def offer(self, line: bytes) -> None:
        """Queue one encoded line, or count it as dropped at the bound; never blocks. Call under `lock`."""
        in_bytes = self._in_bytes + len(line)
        in_lines = self._in_lines + 1
        if in_lines > self._limit_lines or in_bytes > self._limit_bytes:
            self._dropped_full += 1
            return
        self._in_lines = in_lines
        self._in_bytes = in_bytes
        self._pending.append(line)
        if in_bytes >= self._wake_at:  # a full batch waits: send it now, not at the next flush tick
            self._wake_at = _NEVER
            self._wake.set()

    def offer_locked(self, line: bytes) -> None:
        """`offer` taking `lock` itself (for callers that do not hold it)."""
        with self.lock:
            self.offer(line)

    # --- reading -----------------------------------------------------------------------------------
    @property
    def thread_id(self) -> int | None:
        """The worker's thread id (None before `start`): lines logged on it are never forwarded."""
        return self._worker.ident

    @property
    def queued_lines(self) -> int:
        """Lines offered and not yet acknowledged or dropped (in flight included)."""
        return self._in_lines - self._out_lines

    @property
    def queued_bytes(self) -> int:
        """Their bytes."""
        return self._in_bytes - self._out_bytes

    def dropped(self) -> dict[str, int]:
        """Lines that will never be forwarded, by reason."""
        return {
            "queue_full": self._dropped_full,
            "rejected": self._dropped_rejected,
            "shutdown": self._dropped_shutdown,
        }

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker (lines offered before wait in the queue)."""
        if not self._started and not self.closed:
            self._started = True
            self._worker.start()

    def close(self, detach: Callable[[], None] = lambda: None) -> bool:
        """Flush within `shutdown_seconds`, stop; `detach` stops new offers. False if lines were left.

        What is still unacknowledged at the deadline (the shipper down, or too slow) is counted as dropped
        (`shutdown`) and said in one line on stdout.
        """
        if self.closed:
            return True
        self._deadline = time.monotonic() + self.limits.shutdown_seconds
        self._stop.set()
        self._wake.set()
        if self._started:
            # The worker's last attempts end by the deadline; a POST it started before shutdown may not,
            # so the wait is bounded here too (the daemon thread is then abandoned with the process).
            self._worker.join(max(0.0, self._deadline - time.monotonic()))
        detach()
        self.closed = True
        left = self._in_lines - self._out_lines
        self._dropped_shutdown += left
        self._notify(
            "INFO" if left == 0 else "WARNING",
            "Log forwarder stopped",
            {"forwarded_lines": self.forwarded, "not_delivered_lines": left, "dropped_lines": self.dropped()},
        )
        self.transport.close()
        return left == 0

    # --- the worker --------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            # Woken by a full batch: send full batches only; on the tick, everything. Sending what trickled
            # in meanwhile after each wake would turn steady traffic into a POST per handful of lines.
            full_only = self._wake.wait(self.limits.flush_seconds)
            self._wake.clear()
            self._report_drops()
            self._drain(full_only=full_only and not self._stop.is_set())
        self._drain(full_only=False)  # the final flush, bounded by the deadline close() set

    def _drain(self, *, full_only: bool) -> None:
        """Send what is queued, batch by batch; stop when a batch cannot be delivered before shutdown.

        On a size wake (`full_only`) a last batch that is not full stays behind for the next round.
        """
        with self.lock:
            lines, self._pending = self._pending, []
            taken_to = self._in_bytes
        if self._carry:
            lines[:0] = self._carry
            self._carry = []
        batches = self._batches(lines)
        carried = 0
        if full_only and batches and batches[-1][1] < self._batch_bytes:
            self._carry, carried = batches.pop()
        self._wake_at = taken_to + self._batch_bytes - carried
        for batch, size in batches:
            if not self._deliver(batch, size):
                return

    def _batches(self, lines: list[bytes]) -> list[tuple[list[bytes], int]]:
        """`lines` cut into runs of at most `batch_bytes` (a longer line alone), with their sizes."""
        if not lines:
            return []
        ends = list(accumulate(map(len, lines)))  # C loops: no Python work per line
        limit = self._batch_bytes
        if ends[-1] <= limit:
            return [(lines, ends[-1])]
        batches = []
        start, base = 0, 0
        while start < len(lines):
            stop = bisect_right(ends, base + limit, lo=start + 1)
            batches.append((lines[start:stop], ends[stop - 1] - base))
            start, base = stop, ends[stop - 1]
        return batches

    def _deliver(self, batch: list[bytes], size: int) -> bool:
        """Until the batch is acked, rejected or split; False when shutdown's deadline ends the attempts."""
        while True:
            timeout = self.limits.timeout_seconds
            if self._stop.is_set():
                timeout = min(timeout, self._deadline - time.monotonic())
                if timeout <= 0:
                    return False
            result = self._send(batch, timeout)
            if result.outcome is not Outcome.RETRY:
                return self._settle(batch, size, result)
            if self._stop.is_set() and result.reason == "connection":
                return False  # shutting down and nothing listens: waiting would only hold the exit
            self.retries[result.reason if result.reason in self.retries else "connection"] += 1
            self._failing = result
            self._report(
                "failing", "WARNING", "Log forwarding failing; lines wait in memory, bounded", result
            )
            if not self._wait_to_retry(result.retry_after):
                return False

    def _send(self, batch: list[bytes], timeout: float) -> Delivery:
        try:
            return self.transport.send(batch, timeout)
        except Exception as exc:  # noqa: BLE001 - a transport bug must not end forwarding for good
            return Delivery(Outcome.RETRY, "connection", detail=repr(exc))

    def _settle(self, batch: list[bytes], size: int, result: Delivery) -> bool:
        """Acked, split (413) or rejected for good; False only if a half ran out of time."""
        if result.outcome is Outcome.ACKED:
            self._finish(len(batch), size)
            self.forwarded += len(batch)
            self._backoff.reset()
            self._recovered()
            return True
        if result.outcome is Outcome.TOO_LARGE and len(batch) > 1:
            half = len(batch) // 2
            return all(self._deliver(part, sum(map(len, part))) for part in (batch[:half], batch[half:]))
        self._finish(len(batch), size)
        self._dropped_rejected += len(batch)
        self._report("rejected", "WARNING", "Log forwarding: the shipper refused a batch; dropped", result)
        return True

    def _wait_to_retry(self, retry_after: float | None) -> bool:
        """Back off; False when the wait would pass shutdown's deadline."""
        delay = self._backoff.next(retry_after)
        if not self._stop.is_set():
            self._stop.wait(delay)  # shutdown cuts the wait short, then the deadline applies
            return True
        if delay >= self._deadline - time.monotonic():
            return False
        time.sleep(delay)
        return True

    def _finish(self, lines: int, size: int) -> None:
        """Lines acknowledged or dropped: they leave the bound."""
        self._out_lines += lines
        self._out_bytes += size
        self._limit_lines = self._out_lines + self._max_lines
        self._limit_bytes = self._out_bytes + self._max_bytes

    def _recovered(self) -> None:
        if self._failing is not None:
            self._failing = None
            self._last_report.pop("failing", None)
            self._notify("INFO", "Log forwarding recovered", {"queued_lines": self.queued_lines})

    def _report(self, kind: str, level: str, message: str, result: Delivery) -> None:
        if not self._due(kind):
            return
        fields = {
            "reason": result.reason,
            "detail": result.detail,
            "queued_lines": self.queued_lines,
            "dropped_lines": self.dropped(),
        }
        self._notify(level, message, fields)

    def _report_drops(self) -> None:
        dropped = self._dropped_full
        if dropped > self._reported_full and self._due("queue_full"):
            self._notify(
                "WARNING",
                "Log forwarder queue full: new lines dropped",
                {
                    "dropped_since_last_report": dropped - self._reported_full,
                    "max_lines": self._max_lines,
                    "max_bytes": self._max_bytes,
                },
            )
            self._reported_full = dropped

    def _due(self, kind: str) -> bool:
        now = time.monotonic()
        last = self._last_report.get(kind)
        if last is not None and now - last < self.limits.report_seconds:
            return False
        self._last_report[kind] = now
        return True


class ForwarderCollector:
    """`log_forwarder_*` families, read from the forwarder's plain counters at scrape time."""

    def __init__(self, forwarder: LogForwarder, registry: CollectorRegistry) -> None:
        self._forwarder = forwarder
        registry.register(self)

    def describe(self) -> list[Metric]:
        """Names and types, for the registry's duplicate check."""
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        """Current values."""
        yield from self._families()

    def _families(self) -> Iterator[Metric]:
        forwarder = self._forwarder
        forwarded = CounterMetricFamily(
            "log_forwarder_forwarded_lines", "Log lines the log-shipper acknowledged (fsync'd in its spool)."
        )
        forwarded.add_metric([], forwarder.forwarded)
        yield forwarded
        dropped = CounterMetricFamily(
            "log_forwarder_dropped_lines",
            "Log lines that will never be forwarded, by reason: queue_full, rejected, shutdown.",
            labels=["reason"],
        )
        for reason, count in forwarder.dropped().items():
            dropped.add_metric([reason], count)
        yield dropped
        retries = CounterMetricFamily(
            "log_forwarder_retries",
            "Batches sent again, by reason: connection, timeout, 429, 5xx.",
            labels=["reason"],
        )
        for reason, count in forwarder.retries.items():
            retries.add_metric([reason], count)
        yield retries
        queued = GaugeMetricFamily("log_forwarder_queued_lines", "Log lines waiting to be forwarded.")
        queued.add_metric([], forwarder.queued_lines)
        yield queued
        queued_bytes = GaugeMetricFamily("log_forwarder_queued_bytes", "Bytes of the lines waiting.")
        queued_bytes.add_metric([], forwarder.queued_bytes)
        yield queued_bytes


def create_forwarder(
    settings: TelemetrySettings,
    registry: CollectorRegistry,
    notify: Notify,
    transport: ForwardTransport | None = None,
    lock: threading.Lock | None = None,
) -> LogForwarder | None:
    """The forwarder `LOG_FORWARD_URL` asks for (or one over `transport`), its metrics on `registry`.

    `lock` is the one its callers hold when they offer lines (the log sink's).
    """
    if transport is None:
        if settings.log_forward_url is None:
            return None
        url = settings.log_forward_url
        gzip = gzip_pays(url) if settings.log_forward_gzip == "auto" else settings.log_forward_gzip == "true"
        transport = HttpTransport(url, settings.service_name, settings.log_forward_timeout_seconds, gzip=gzip)
    forwarder = LogForwarder(transport, ForwarderLimits.from_settings(settings), notify, lock)
    ForwarderCollector(forwarder, registry)
    return forwarder
