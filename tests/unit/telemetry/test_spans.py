"""The lean tracer: OpenTelemetry API semantics on the write side, ReadableSpan on the read side."""

from __future__ import annotations

import threading
import time

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.propagation import set_span_in_context

from telemetry.otlp import encode_export_request
from telemetry.spans import BatchExportProcessor, LeanSpan, LeanTracerProvider
from telemetry.tracing import shutdown_tracer_provider

RESOURCE = Resource.create({"service.name": "gatewayz-api"})


def provider_with(exporter: SpanExporter | None = None, sampler=ALWAYS_ON) -> LeanTracerProvider:
    processor = BatchExportProcessor(exporter) if exporter is not None else None
    return LeanTracerProvider(RESOURCE, sampler, processor)


def remote_parent(*, sampled: bool) -> SpanContext:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True, trace_flags=flags
    )


class TestSpanApi:
    def test_attributes_status_events_and_end(self):
        """Attributes and events are recorded until end; OK is final; end is idempotent."""
        exporter = InMemorySpanExporter()
        provider = provider_with(exporter)
        span = provider.get_tracer("t").start_span("op", kind=SpanKind.SERVER, attributes={"a": 1})
        span.set_attribute("b", "x")
        span.set_attributes({"c": True})
        span.add_event("step", {"n": 2})
        span.set_status(Status(StatusCode.OK))
        span.set_status(StatusCode.ERROR, "too late")
        span.end()
        span.end()
        span.set_attribute("after", 1)
        provider.force_flush()
        (done,) = exporter.get_finished_spans()
        assert dict(done.attributes) == {"a": 1, "b": "x", "c": True}
        assert [event.name for event in done.events] == ["step"]
        assert done.status.status_code is StatusCode.OK
        assert done.end_time >= done.start_time
        assert done.kind is SpanKind.SERVER
        assert not span.is_recording()

    def test_record_exception_follows_semantic_conventions(self):
        """An exception becomes an `exception` event with type, message and stack trace."""
        span = provider_with().get_tracer("t").start_span("op")
        try:
            raise ValueError("boom")
        except ValueError as exc:
            span.record_exception(exc)
        (event,) = span.events
        assert event.name == "exception"
        assert event.attributes["exception.type"] == "ValueError"
        assert event.attributes["exception.message"] == "boom"
        assert "raise ValueError" in event.attributes["exception.stacktrace"]

    def test_start_as_current_span_records_escaping_exception(self):
        """Inside the block the span is current; an escaping exception marks it ERROR and ends it."""
        exporter = InMemorySpanExporter()
        provider = provider_with(exporter)
        tracer = provider.get_tracer("t")
        seen = {}

        def work() -> None:
            with tracer.start_as_current_span("outer") as outer:
                seen["current"] = trace.get_current_span() is outer
                with tracer.start_as_current_span("inner") as inner:
                    seen["nested"] = inner.parent.span_id == outer.get_span_context().span_id
                raise RuntimeError("bad")

        with pytest.raises(RuntimeError):
            work()
        assert seen == {"current": True, "nested": True}
        provider.force_flush()
        spans = {span.name: span for span in exporter.get_finished_spans()}
        assert spans["outer"].status.status_code is StatusCode.ERROR
        assert spans["inner"].context.trace_id == spans["outer"].context.trace_id
        assert trace.get_current_span() is trace.INVALID_SPAN


class TestSampling:
    def test_always_off_gives_ids_without_recording(self):
        """Unsampled spans still carry valid ids (logs use them) but record and export nothing."""
        exporter = InMemorySpanExporter()
        provider = provider_with(exporter, ALWAYS_OFF)
        span = provider.get_tracer("t").start_span("op")
        assert isinstance(span, NonRecordingSpan)
        assert span.get_span_context().is_valid
        assert not span.get_span_context().trace_flags.sampled
        span.end()
        provider.force_flush()
        assert exporter.get_finished_spans() == ()

    def test_parent_based_follows_the_remote_parent(self):
        """With parent-based sampling a sampled remote parent is recorded even at ratio 0, and vice versa."""
        tracer = provider_with(sampler=ParentBased(TraceIdRatioBased(0.0))).get_tracer("t")
        sampled = tracer.start_span(
            "a", context=set_span_in_context(NonRecordingSpan(remote_parent(sampled=True)))
        )
        dropped = tracer.start_span(
            "b", context=set_span_in_context(NonRecordingSpan(remote_parent(sampled=False)))
        )
        assert isinstance(sampled, LeanSpan)
        assert sampled.parent.span_id == 0x00F067AA0BA902B7
        assert sampled.get_span_context().trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
        assert isinstance(dropped, NonRecordingSpan)

    @pytest.mark.parametrize(
        "sampler",
        [
            ParentBased(ALWAYS_ON),
            ParentBased(ALWAYS_OFF),
            ParentBased(TraceIdRatioBased(0.5)),
            ALWAYS_ON,
            ALWAYS_OFF,
            TraceIdRatioBased(0.5),
        ],
        ids=lambda sampler: sampler.get_description(),
    )
    @pytest.mark.parametrize(
        "parent", ["none", "remote-sampled", "remote-unsampled", "local-sampled", "local-unsampled"]
    )
    def test_inline_decision_is_the_sdk_samplers(self, sampler, parent):
        """For every standard sampler and kind of parent, the inlined decision is the SDK sampler's own
        decision for the same trace id, with the same trace state and attributes."""
        provider = provider_with(sampler=sampler)
        assert provider.inline_decision is not None
        context = None
        if parent != "none":
            where, state = parent.split("-")
            flags = TraceFlags(TraceFlags.SAMPLED if state == "sampled" else TraceFlags.DEFAULT)
            parent_context = SpanContext(
                0x4BF92F3577B34DA6A3CE929D0E0E4736,
                0x00F067AA0BA902B7,
                is_remote=where == "remote",
                trace_flags=flags,
                trace_state=TraceState([("vendor", "x")]),
            )
            context = set_span_in_context(NonRecordingSpan(parent_context))
        for _ in range(200):
            span = provider.get_tracer("t").start_span("op", context=context, attributes={"a": 1})
            span_context = span.get_span_context()
            sdk = sampler.should_sample(context, span_context.trace_id, "op", attributes={"a": 1})
            assert span_context.trace_flags.sampled == (sdk.decision is Decision.RECORD_AND_SAMPLE)
            assert isinstance(span, LeanSpan) == (sdk.decision is not Decision.DROP)
            assert span_context.trace_state == (sdk.trace_state or TraceState())
            if isinstance(span, LeanSpan):
                assert dict(span.attributes) == dict(sdk.attributes) == {"a": 1}

    def test_other_samplers_go_through_the_sdk(self):
        """A sampler the tracer does not know (or non-default delegates) is asked for every span."""
        custom_delegate = ParentBased(ALWAYS_ON, local_parent_not_sampled=StaticSampler(Decision.DROP))
        assert provider_with(sampler=custom_delegate).inline_decision is None
        assert provider_with(sampler=ParentBased(StaticSampler(Decision.RECORD_ONLY))).inline_decision is None

    def test_ratio_sampling_is_roughly_the_ratio(self):
        """traceidratio 0.25 records about a quarter of root spans."""
        tracer = provider_with(sampler=TraceIdRatioBased(0.25)).get_tracer("t")
        recorded = sum(isinstance(tracer.start_span("x"), LeanSpan) for _ in range(4000))
        assert 800 < recorded < 1200


class TestReadableSpanCompatibility:
    def test_stock_encoder_reads_lean_spans_like_ours(self):
        """The SDK's own OTLP encoder accepts lean spans and agrees with our encoder byte-for-message."""
        exporter = InMemorySpanExporter()
        provider = provider_with(exporter)
        tracer = provider.get_tracer("gateway", "1.0")
        parent = set_span_in_context(NonRecordingSpan(remote_parent(sampled=True)))
        with tracer.start_as_current_span(
            "POST /v1/chat/completions", context=parent, kind=SpanKind.SERVER
        ) as s:
            s.set_attribute("http.response.status_code", 200)
            with tracer.start_as_current_span("chat gatewayz-fast", kind=SpanKind.CLIENT) as child:
                child.set_status(Status(StatusCode.ERROR, "upstream 500"))
        provider.force_flush()
        spans = exporter.get_finished_spans()
        ours = ExportTraceServiceRequest.FromString(encode_export_request(spans))
        assert ours == encode_spans(spans)
        assert ours.resource_spans[0].resource.attributes[0].key


def _wait_for(condition, seconds: float = 5) -> None:
    """Poll `condition` until it holds or `seconds` pass (the assertion that follows says which)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


class _BlockingExporter(SpanExporter):
    def __init__(self) -> None:
        self.release = threading.Event()
        self.batches: list[int] = []

    def export(self, spans):
        self.batches.append(len(spans))
        self.release.wait(30)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        return None


class TestBatchExportProcessor:
    def test_batches_and_bounded_queue(self):
        """Spans leave in batches of at most 512; past the queue bound new spans are dropped and counted."""
        exporter = _BlockingExporter()
        processor = BatchExportProcessor(exporter, max_queue=600, batch_size=512, delay_seconds=30)
        provider = LeanTracerProvider(RESOURCE, ALWAYS_ON, processor)
        tracer = provider.get_tracer("t")
        for _ in range(512):
            tracer.start_span("x").end()
        _wait_for(lambda: exporter.batches)
        assert exporter.batches == [512]  # the worker is now stuck in export
        for _ in range(700):
            tracer.start_span("y").end()
        assert processor.dropped == 100
        exporter.release.set()
        assert provider.force_flush()
        assert sum(exporter.batches) == 1112

    def test_a_full_batch_wake_sends_full_batches_only(self):
        """Spans that trickle in while a batch is exported wait for the next full batch or the delay,
        so steady traffic is sent in full batches, not one POST per few spans."""
        exporter = _BlockingExporter()
        processor = BatchExportProcessor(exporter, batch_size=10, delay_seconds=30)
        tracer = LeanTracerProvider(RESOURCE, ALWAYS_ON, processor).get_tracer("t")
        for _ in range(10):
            tracer.start_span("x").end()
        _wait_for(lambda: exporter.batches)
        for _ in range(23):  # arrive while the first batch is being exported
            tracer.start_span("y").end()
        exporter.release.set()
        _wait_for(lambda: sum(exporter.batches) >= 30)
        time.sleep(0.2)
        assert exporter.batches == [10, 10, 10]  # the 3 left over wait: no partial batch
        assert processor.force_flush()
        assert exporter.batches == [10, 10, 10, 3]

    def test_the_delay_sends_a_partial_batch(self):
        """Below a full batch, what is queued leaves once the schedule delay has passed."""
        exporter = InMemorySpanExporter()
        processor = BatchExportProcessor(exporter, batch_size=512, delay_seconds=0.2)
        tracer = LeanTracerProvider(RESOURCE, ALWAYS_ON, processor).get_tracer("t")
        for _ in range(3):
            tracer.start_span("x").end()
        _wait_for(lambda: len(exporter.get_finished_spans()) >= 3)
        assert len(exporter.get_finished_spans()) == 3

    def test_shutdown_is_bounded_with_a_stuck_exporter(self):
        """An export that never returns cannot hold shutdown past its deadline; nothing more is sent."""
        exporter = _BlockingExporter()
        processor = BatchExportProcessor(exporter, batch_size=10, delay_seconds=30)
        provider = LeanTracerProvider(RESOURCE, ALWAYS_ON, processor)
        for _ in range(10):  # a full batch wakes the worker at once
            provider.get_tracer("t").start_span("x").end()
        time.sleep(0.2)  # the worker is now stuck exporting those 10
        for _ in range(5):
            provider.get_tracer("t").start_span("y").end()
        started = time.monotonic()
        shutdown_tracer_provider(provider, deadline=1.0)
        assert time.monotonic() - started < 1.5
        exporter.release.set()
        time.sleep(0.2)
        assert exporter.batches == [10]  # once stopping, the worker starts no further batch
