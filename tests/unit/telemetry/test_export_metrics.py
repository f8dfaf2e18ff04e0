"""`otel_spans_*`: the exporter's sent and dropped spans on /metrics, so a full queue is never silent."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from prometheus_client import CollectorRegistry

from telemetry.export_metrics import SpanExportCollector
from telemetry.spans import BatchExportProcessor, LeanTracerProvider

RESOURCE = Resource.create({"service.name": "gatewayz-api"})


class _Exporter(SpanExporter):
    def __init__(self, result: SpanExportResult) -> None:
        self.result = result

    def export(self, spans):
        return self.result

    def shutdown(self):
        return None


class _RaisingExporter(SpanExporter):
    def export(self, spans):
        raise RuntimeError("exporter bug")

    def shutdown(self):
        return None


def scrape(processor: BatchExportProcessor | None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(SpanExportCollector(LeanTracerProvider(RESOURCE, ALWAYS_ON, processor)))
    return registry


def run(exporter: SpanExporter, spans: int, *, max_queue: int = 4096) -> tuple[CollectorRegistry, int]:
    processor = BatchExportProcessor(exporter, max_queue=max_queue, batch_size=10, delay_seconds=30)
    provider = LeanTracerProvider(RESOURCE, ALWAYS_ON, processor)
    registry = CollectorRegistry()
    registry.register(SpanExportCollector(provider))
    tracer = provider.get_tracer("t")
    for _ in range(spans):
        tracer.start_span("x").end()
    queued = processor.queued
    assert provider.force_flush()
    provider.shutdown(1.0)
    return registry, queued


class TestSpanExportCollector:
    def test_exported_spans_are_counted(self):
        """Spans in batches the exporter accepted count as exported; nothing dropped."""
        registry, _ = run(_Exporter(SpanExportResult.SUCCESS), 25)
        assert registry.get_sample_value("otel_spans_exported_total") == 25
        assert registry.get_sample_value("otel_spans_dropped_total", {"reason": "export_failed"}) == 0
        assert registry.get_sample_value("otel_spans_dropped_total", {"reason": "queue_full"}) == 0

    def test_failed_and_raising_exports_count_as_dropped(self):
        """A batch the exporter failed (Tempo down) or raised on is dropped, and counted as export_failed."""
        for exporter in (_Exporter(SpanExportResult.FAILURE), _RaisingExporter()):
            registry, _ = run(exporter, 12)
            assert registry.get_sample_value("otel_spans_dropped_total", {"reason": "export_failed"}) == 12
            assert registry.get_sample_value("otel_spans_exported_total") == 0

    def test_a_full_queue_counts_queue_full(self):
        """Past OTEL_BSP_MAX_QUEUE_SIZE new spans are refused and counted; the bound is exposed."""
        exporter = _Exporter(SpanExportResult.SUCCESS)
        processor = BatchExportProcessor(exporter, max_queue=5, batch_size=1000, delay_seconds=30)
        provider = LeanTracerProvider(RESOURCE, ALWAYS_ON, processor)
        registry = CollectorRegistry()
        registry.register(SpanExportCollector(provider))
        tracer = provider.get_tracer("t")
        for _ in range(8):
            tracer.start_span("x").end()
        assert registry.get_sample_value("otel_spans_dropped_total", {"reason": "queue_full"}) == 3
        assert registry.get_sample_value("otel_span_queue_spans") == 5
        assert registry.get_sample_value("otel_span_queue_capacity_spans") == 5
        provider.shutdown(1.0)

    def test_zero_series_without_an_exporter(self):
        """Tracing off still exposes the families at zero, so alerts and panels have a series."""
        registry = scrape(None)
        assert registry.get_sample_value("otel_spans_exported_total") == 0
        assert registry.get_sample_value("otel_spans_dropped_total", {"reason": "queue_full"}) == 0

    def test_every_service_exposes_them(self, gateway_telemetry):
        """`Telemetry.create` registers the collector on the service's registry."""
        assert gateway_telemetry.registry.get_sample_value("otel_spans_exported_total") == 0
