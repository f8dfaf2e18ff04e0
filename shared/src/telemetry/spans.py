"""A lean tracer: OpenTelemetry API spans recorded without the SDK's per-span machinery.

The SDK's `_Span` costs ~35 µs to start and end here (bounded attribute dicts with locks and value cleaning,
a ReadableSpan copy at end, self-metrics), and its batch processor as much again: more than serving a whole
request. These spans implement the API (`start_span`, `start_as_current_span`, `set_status`,
`record_exception`, …) for our code and read like the SDK's `ReadableSpan` (`name`, `context`, `parent`,
`attributes`, `events`, `status`, `resource`, …) for exporters, so SDK samplers, `SpanExporter`s (the OTLP
ones, `InMemorySpanExporter`) and `trace.use_span` keep working unchanged.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.trace import Event
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.util.types import Attributes, AttributeValue

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
UNSET_STATUS = Status(StatusCode.UNSET)
"""The status every span starts with (the encoder recognises it by identity)."""
_SAMPLED_DECISIONS = frozenset({Decision.RECORD_AND_SAMPLE})
_random = random.Random()  # noqa: S311 - ids need uniqueness, not secrecy (as the SDK's generator)


class LeanSpan(trace.Span):
    """A recording span: written through the OpenTelemetry API, read by exporters like a ReadableSpan."""

    dropped_attributes = 0
    dropped_events = 0
    dropped_links = 0

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link],
        start_time: int,
        tracer: LeanTracer,
    ) -> None:
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes: dict[str, AttributeValue] = dict(attributes) if attributes else {}
        self.links = tuple(links)
        # A tuple: events are rare, and an empty list would be one more object for the GC to track.
        self.events: tuple[Event, ...] = ()
        self.status = UNSET_STATUS
        self.start_time = start_time
        self.end_time: int | None = None
        self.resource: Resource = tracer.provider.resource
        self.instrumentation_scope = tracer.scope
        self._tracer = tracer

    # The read side (what exporters use) is plain attributes — `context`, `parent`, `name`, `kind`,
    # `attributes`, `links`, `events`, `status`, `start_time`, `end_time`, `resource`,
    # `instrumentation_scope` — so the encoder reads each with one attribute load, not a property call.

    # -- write side (the OpenTelemetry API) --
    def get_span_context(self) -> SpanContext:
        """The span's own context (trace id, span id, flags)."""
        return self.context

    def is_recording(self) -> bool:
        """True until the span ends."""
        return self.end_time is None

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set several attributes."""
        if self.end_time is None:
            self.attributes.update(attributes)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute."""
        if self.end_time is None:
            self.attributes[key] = value

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        """Record a timestamped event."""
        if self.end_time is None:
            self.events = (*self.events, Event(name, attributes, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        """Link another span's context."""
        if self.end_time is None and context.is_valid:
            self.links = (*self.links, Link(context, attributes))

    def update_name(self, name: str) -> None:
        """Rename the span."""
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the status; as the SDK does, a status of OK is final."""
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            self.status = status
        else:
            self.status = Status(status, description if status is StatusCode.ERROR else None)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,  # noqa: FBT001, FBT002 - the API's signature
    ) -> None:
        """Record an `exception` event with type, message and stack trace (semantic conventions)."""
        event_attributes: dict[str, AttributeValue] = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            event_attributes.update(attributes)
        self.add_event("exception", event_attributes, timestamp)

    def end(self, end_time: int | None = None) -> None:
        """End the span and hand it to the provider's processor (once)."""
        if self.end_time is not None:
            return
        self.end_time = end_time or time.time_ns()
        self._tracer.provider.on_end(self)


class LeanTracer(trace.Tracer):
    """Starts `LeanSpan`s, deciding sampling with an SDK `Sampler` (so OTEL_TRACES_SAMPLER applies)."""

    def __init__(self, provider: LeanTracerProvider, scope: InstrumentationScope) -> None:
        self.provider = provider
        self.scope = scope

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,  # noqa: ARG002, FBT001, FBT002 - applied by use_span in start_as_current_span
        set_status_on_exception: bool = True,  # noqa: ARG002, FBT001, FBT002 - same
    ) -> trace.Span:
        """A recording span when sampled, else a non-recording one carrying the ids (for logs)."""
        current = trace.get_current_span(context).get_span_context()
        parent = current if current.is_valid else None
        trace_id = parent.trace_id if parent is not None else _random.getrandbits(128) or 1
        decide = self.provider.inline_decision
        if decide is not None:
            # The SDK sampler's decision without its SamplingResult (see `inline_decision`).
            sampled = recorded = decide(parent, trace_id)
            trace_state = parent.trace_state if parent is not None else None
            span_attributes = attributes
        else:
            result = self.provider.sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = result.decision in _SAMPLED_DECISIONS
            recorded = result.decision is not Decision.DROP
            trace_state, span_attributes = result.trace_state, result.attributes or attributes
        span_context = SpanContext(
            trace_id,
            _random.getrandbits(64) or 1,
            is_remote=False,
            trace_flags=_SAMPLED if sampled else _NOT_SAMPLED,
            trace_state=trace_state,
        )
        if not recorded:
            return trace.NonRecordingSpan(span_context)
        return LeanSpan(
            name, span_context, parent, kind, span_attributes, links or (), start_time or time.time_ns(), self
        )

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,  # noqa: FBT001, FBT002
        set_status_on_exception: bool = True,  # noqa: FBT001, FBT002
        end_on_exit: bool = True,  # noqa: FBT001, FBT002
    ) -> Iterator[trace.Span]:
        """Start a span, make it current for the block, end it after (recording an escaping exception)."""
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class BatchExportProcessor:
    """Queues ended spans and exports them in batches from one background thread.

    A full queue drops new spans (counted) rather than block or grow: telemetry must never hurt serving.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue: int = 4096,
        batch_size: int = 512,
        delay_seconds: float = 1.0,
    ) -> None:
        self.exporter = exporter
        self.dropped = 0
        """Spans refused because the queue was full (the exporter cannot keep up)."""
        self.exported = 0
        """Spans the exporter reported sent."""
        self.failed = 0
        """Spans in batches the exporter reported failed (Tempo down or refusing): dropped, not retried."""
        self.max_queue = max_queue
        self._queue: deque[LeanSpan] = deque()
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._delay = delay_seconds
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._stopping = False
        self._worker = threading.Thread(target=self._run, name="span-export", daemon=True)
        self._worker.start()

    def on_end(self, span: LeanSpan) -> None:
        """Queue one ended span; wake the worker when a batch is ready."""
        queue = self._queue
        if len(queue) >= self._max_queue:
            self.dropped += 1
            return
        queue.append(span)
        if len(queue) == self._batch_size:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            # Woken by a full batch: send full batches only, and leave the rest for the next wake. Sending
            # whatever trickled in meanwhile would turn steady traffic into a POST per few spans.
            full_only = self._wake.wait(self._delay)
            self._wake.clear()
            self._export_queued(deadline=None, full_only=full_only)

    def _export_queued(self, deadline: float | None, *, full_only: bool = False) -> bool:
        """Export what is queued, batch by batch; False if the deadline (or shutdown) cut it short.

        The worker (no deadline) stops between batches once shutdown begins, so shutdown never waits for
        more than the one export in flight. With `full_only`, it stops when less than a batch is left.
        """
        if not self._export_lock.acquire(
            timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())
        ):
            return False
        try:
            while self._queue:
                if (deadline is None and self._stopping) or (
                    deadline is not None and time.monotonic() > deadline
                ):
                    return False
                if full_only and len(self._queue) < self._batch_size:
                    return True
                batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
                # Counted from this one worker thread (plain ints, read at scrape time): no lock per span.
                try:
                    # LeanSpan reads as a ReadableSpan: exporters only use its read side.
                    result = self.exporter.export(batch)  # type: ignore[arg-type]
                except Exception:  # noqa: BLE001 - an exporter bug must not kill the worker
                    result = None
                if result is SpanExportResult.SUCCESS:
                    self.exported += len(batch)
                else:
                    self.failed += len(batch)
            return True
        finally:
            self._export_lock.release()

    @property
    def queued(self) -> int:
        """Spans waiting for export."""
        return len(self._queue)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export what is queued, within `timeout_millis`."""
        return self._export_queued(deadline=time.monotonic() + timeout_millis / 1000)

    def shutdown(self, timeout_seconds: float = 3.0) -> None:
        """Stop the worker, flush what time allows, shut the exporter down; never past the deadline."""
        deadline = time.monotonic() + timeout_seconds
        self._stopping = True
        self._wake.set()
        self._worker.join(max(0.0, deadline - time.monotonic()))
        self._export_queued(deadline=deadline)
        self.exporter.shutdown()


InlineDecision = Callable[["SpanContext | None", int], bool]
"""(valid parent context or None, trace id) -> sampled."""


def _root_decision(sampler: Sampler) -> Callable[[int], bool] | None:
    if sampler is ALWAYS_ON:
        return lambda _trace_id: True
    if sampler is ALWAYS_OFF:
        return lambda _trace_id: False
    if type(sampler) is TraceIdRatioBased:
        bound, limit = sampler.bound, TraceIdRatioBased.TRACE_ID_LIMIT
        return lambda trace_id: trace_id & limit < bound
    return None


def inline_decision(sampler: Sampler) -> InlineDecision | None:
    """The decision of the standard `OTEL_TRACES_SAMPLER`s as a plain function; None for any other sampler.

    `always_on`, `always_off`, `traceidratio` and their `parentbased_` forms (with the default delegates:
    follow the parent's sampled flag, remote or local) decide from the trace id and the parent alone, and
    keep the parent's trace state, so the tracer need not build the SDK's `SamplingResult` for each span.
    """
    if isinstance(sampler, ParentBased):
        delegates = vars(sampler)
        follows_parent = (
            delegates.get("_remote_parent_sampled") is ALWAYS_ON
            and delegates.get("_local_parent_sampled") is ALWAYS_ON
            and delegates.get("_remote_parent_not_sampled") is ALWAYS_OFF
            and delegates.get("_local_parent_not_sampled") is ALWAYS_OFF
        )
        root = _root_decision(delegates.get("_root")) if follows_parent else None  # type: ignore[arg-type]
        if root is None:
            return None
        decide_root: Callable[[int], bool] = root
        return lambda parent, trace_id: (
            parent.trace_flags.sampled if parent is not None else decide_root(trace_id)
        )
    root = _root_decision(sampler)
    if root is None:
        return None
    decide_alone: Callable[[int], bool] = root
    return lambda _parent, trace_id: decide_alone(trace_id)


class LeanTracerProvider(trace.TracerProvider):
    """Hands out `LeanTracer`s sharing one resource, sampler and (optional) export processor."""

    def __init__(self, resource: Resource, sampler: Sampler, processor: BatchExportProcessor | None) -> None:
        self.resource = resource
        self.sampler = sampler
        self.inline_decision = inline_decision(sampler)
        self.processor = processor
        self._tracers: dict[tuple[str, str | None], LeanTracer] = {}

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> LeanTracer:
        """The tracer for an instrumentation scope (cached)."""
        key = (instrumenting_module_name, instrumenting_library_version)
        tracer = self._tracers.get(key)
        if tracer is None:
            scope = InstrumentationScope(
                instrumenting_module_name, instrumenting_library_version, schema_url, attributes
            )
            tracer = self._tracers[key] = LeanTracer(self, scope)
        return tracer

    def on_end(self, span: LeanSpan) -> None:
        """Route an ended, sampled span to the processor, if exporting (RECORD_ONLY spans stay local)."""
        if self.processor is not None and span.context.trace_flags.sampled:
            self.processor.on_end(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export what is queued."""
        return self.processor.force_flush(timeout_millis) if self.processor is not None else True

    def shutdown(self, timeout_seconds: float = 3.0) -> None:
        """Flush and stop exporting, within `timeout_seconds`."""
        if self.processor is not None:
            self.processor.shutdown(timeout_seconds)
