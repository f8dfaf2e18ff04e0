"""The headers that carry a span's context to the next hop (W3C `traceparent`, honouring OTEL_PROPAGATORS).

`opentelemetry.propagate.inject` runs every configured propagator through the current context: making the
span current, then the composite's dispatch, costs ~10 µs a call here. With the default propagators
(`tracecontext,baggage`) and no baggage set, the answer is just `traceparent` (and `tracestate`), written
straight from the span's context; anything else goes through `inject` unchanged. Both give the same headers
(`tests/unit/telemetry/test_trace_headers.py`).
"""

from __future__ import annotations

from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_standard: list[TextMapPropagator] = []
"""The global propagator last seen to be the default pair (identity-checked each call)."""


def _is_default(textmap: TextMapPropagator) -> bool:
    if _standard and _standard[0] is textmap:
        return True
    propagators = getattr(textmap, "_propagators", None)
    kinds = (
        [type(propagator) for propagator in propagators]
        if isinstance(textmap, CompositePropagator) and propagators
        else []
    )
    if kinds in ([TraceContextTextMapPropagator, W3CBaggagePropagator], [TraceContextTextMapPropagator]):
        _standard[:] = [textmap]
        return True
    return False


def trace_headers(span: trace.Span) -> dict[str, str]:
    """What `propagate.inject` would write for a context whose current span is `span`."""
    textmap = propagate.get_global_textmap()
    if _is_default(textmap) and not baggage.get_all():
        context = span.get_span_context()
        if not context.is_valid:
            return {}
        headers = {
            "traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        }
        if context.trace_state:
            headers["tracestate"] = context.trace_state.to_header()
        return headers
    carrier: dict[str, str] = {}
    textmap.inject(carrier, context=trace.set_span_in_context(span))
    return carrier
