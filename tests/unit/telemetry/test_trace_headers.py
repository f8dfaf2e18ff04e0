"""`trace_headers` writes exactly what the configured OpenTelemetry propagators would inject."""

from __future__ import annotations

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from telemetry.propagation import trace_headers


def _stock(span: trace.Span) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


SPANS = [
    NonRecordingSpan(
        SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False, TraceFlags(1))
    ),
    NonRecordingSpan(SpanContext(1, 2, False, TraceFlags(0))),  # not sampled, ids with leading zeros
    NonRecordingSpan(
        SpanContext(
            2**128 - 1, 2**64 - 1, True, TraceFlags(1), TraceState([("vendor", "v1"), ("other", "x")])
        )
    ),
    trace.INVALID_SPAN,
]


class TestTraceHeaders:
    @pytest.mark.parametrize("span", SPANS)
    def test_same_as_inject_with_the_default_propagators(self, span):
        """traceparent (and tracestate) as the stock W3C propagator writes them; nothing for no span."""
        assert trace_headers(span) == _stock(span)

    def test_baggage_goes_through_inject(self):
        """With baggage in the context, the baggage header is sent too, as inject sends it."""
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            headers = trace_headers(SPANS[0])
            assert headers == _stock(SPANS[0])
            assert headers["baggage"] == "tenant=acme"
        finally:
            context.detach(token)

    def test_other_propagators_are_honoured(self):
        """A non-default global propagator (OTEL_PROPAGATORS) is used as configured."""

        class Marker(TraceContextTextMapPropagator):
            def inject(self, carrier, context=None, setter=None):
                carrier["x-marker"] = "1"

        previous = propagate.get_global_textmap()
        propagate.set_global_textmap(CompositePropagator([Marker(), W3CBaggagePropagator()]))
        try:
            assert trace_headers(SPANS[0]) == {"x-marker": "1"}
        finally:
            propagate.set_global_textmap(previous)
        assert trace_headers(SPANS[0]) == _stock(SPANS[0])
