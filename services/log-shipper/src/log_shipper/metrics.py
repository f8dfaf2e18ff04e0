"""`log_shipper_*` metric families, on an injected registry."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SOURCES = ("stdin", "file", "http", "own")
DROP_REASONS = ("spool_full", "loki_rejected", "too_large", "loki_disabled", "spool_unreadable")


class ShipperMetrics:
    """Lines read and shipped, bytes, batches, retries, drops by reason, spool size, push latency, lag."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lines_read = Counter(
            "log_shipper_lines_read", "Log lines read, by source.", ["source"], registry=registry
        )
        self.bytes_read = Counter(
            "log_shipper_read_bytes", "Bytes of log lines read, by source.", ["source"], registry=registry
        )
        self.lines_shipped = Counter(
            "log_shipper_lines_shipped", "Log lines Loki acknowledged.", registry=registry
        )
        self.bytes_pushed = Counter(
            "log_shipper_pushed_bytes", "Compressed push-body bytes Loki acknowledged.", registry=registry
        )
        self.batches = Counter(
            "log_shipper_batches",
            "Push requests by result: success, dropped (a 4xx) or split (a 413).",
            ["result"],
            registry=registry,
        )
        self.retries = Counter(
            "log_shipper_retries",
            "Pushes retried, by reason: 429, 5xx or connection.",
            ["reason"],
            registry=registry,
        )
        self.dropped = Counter(
            "log_shipper_dropped_lines",
            "Lines that will never reach Loki, by reason.",
            ["reason"],
            registry=registry,
        )
        self.truncated = Counter(
            "log_shipper_truncated_lines", "Lines cut to the line limit, with a marker.", registry=registry
        )
        self.retimed = Counter(
            "log_shipper_retimed_lines",
            "Lines whose timestamp Loki would refuse (too old, too new, too far behind) and was replaced.",
            registry=registry,
        )
        self.spool_bytes = Gauge(
            "log_shipper_spool_bytes", "Bytes in the disk spool awaiting Loki.", registry=registry
        )
        self.spool_segments = Gauge(
            "log_shipper_spool_segments", "Batches in the disk spool awaiting Loki.", registry=registry
        )
        self.push_duration = Histogram(
            "log_shipper_push_duration_seconds",
            "Duration of one push request to Loki, whatever its answer.",
            buckets=PUSH_BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            "log_shipper_lag_seconds",
            "Age of the oldest batch Loki has not acknowledged (0 when all is shipped).",
            registry=registry,
        )
        # Children bound once: the hot path does no label lookups.
        self.read_by_source = {source: self.lines_read.labels(source) for source in SOURCES}
        self.bytes_by_source = {source: self.bytes_read.labels(source) for source in SOURCES}
        self.dropped_by_reason = {reason: self.dropped.labels(reason) for reason in DROP_REASONS}
        for result in ("success", "dropped", "split"):
            self.batches.labels(result)
        for reason in ("429", "5xx", "connection"):
            self.retries.labels(reason)

    def watch_spool(
        self, size: Callable[[], float], segments: Callable[[], float], lag: Callable[[], float]
    ) -> None:
        """Read spool size, count and lag at scrape time."""
        self.spool_bytes.set_function(size)
        self.spool_segments.set_function(segments)
        self.lag.set_function(lag)
