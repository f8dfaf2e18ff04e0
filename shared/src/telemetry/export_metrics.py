"""`otel_spans_*`: what the span exporter sent and dropped, read from the processor at scrape time.

Tempo answers an exporter with success even when it discards spans (BACKENDS.md), so these count only
our side: spans refused because the queue was full, and spans in batches the exporter could not send.
Read at scrape time from plain counters the processor keeps, so the request path pays nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from telemetry.spans import LeanTracerProvider

DROP_REASONS = ("queue_full", "export_failed")


class SpanExportCollector(Collector):
    """Exported and dropped span counts, and the queue's length and bound, of one tracer provider."""

    def __init__(self, provider: LeanTracerProvider) -> None:
        self._provider = provider

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """The families, zero while nothing is exported (so rates and alerts have a series)."""
        processor = self._provider.processor
        exported = processor.exported if processor is not None else 0
        dropped = {
            "queue_full": processor.dropped if processor is not None else 0,
            "export_failed": processor.failed if processor is not None else 0,
        }
        yield CounterMetricFamily(
            "otel_spans_exported", "Spans the OTLP exporter sent to Tempo.", value=exported
        )
        family = CounterMetricFamily(
            "otel_spans_dropped",
            "Spans that never left this process, by reason: queue_full (the exporter cannot keep up) or"
            " export_failed (Tempo down or refusing).",
            labels=["reason"],
        )
        for reason in DROP_REASONS:
            family.add_metric([reason], dropped[reason])
        yield family
        yield GaugeMetricFamily(
            "otel_span_queue_spans",
            "Ended spans waiting for export.",
            value=processor.queued if processor is not None else 0,
        )
        yield GaugeMetricFamily(
            "otel_span_queue_capacity_spans",
            "Bound of the export queue (OTEL_BSP_MAX_QUEUE_SIZE); beyond it spans are dropped.",
            value=processor.max_queue if processor is not None else 0,
        )
