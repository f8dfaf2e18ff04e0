"""The item across Loki and Tempo: a traced request's log line leads to its trace, and back."""

from __future__ import annotations

import secrets
import time
from typing import Any

from gatewayz_tools.verify.stack import GATEWAY_SERVICE, CheckFailedError, Stack, poll


def check_trace_log_round_trip(stack: Stack) -> str:
    """A traced request's log line names its trace; the trace opens in Tempo; its logs come back by id."""
    trace_id = secrets.token_hex(16)
    parent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    stack.client.get(f"{stack.gateway}/api/users/1", headers={"traceparent": parent})
    started = time.monotonic()
    query = f'{{service="{GATEWAY_SERVICE}"}} | json | trace_id="{trace_id}"'
    lines = poll(lambda: stack.loki_lines(query, since_seconds=300), stack.wait)
    if not lines:
        raise CheckFailedError(
            f"no log line with trace_id {trace_id} after {stack.wait:.0f}s",
            "logs lack trace ids or are not shipped: check the gateway's stdout JSON and the shipper",
        )
    log_seconds = time.monotonic() - started

    def fetch_trace() -> dict[str, Any] | None:
        response = stack.client.get(f"{stack.tempo}/api/traces/{trace_id}")
        return response.json() if response.status_code == 200 else None

    trace = poll(fetch_trace, stack.wait, interval=2.0)
    if not trace:
        raise CheckFailedError(
            f"log line found after {log_seconds:.1f}s, but Tempo has no trace {trace_id}",
            "spans are not exported: check TEMPO_ENABLED and the OTLP endpoint; the sampler must keep"
            " sampled parents (parentbased_*)",
        )
    spans = sum(
        len(scope.get("spans", []))
        for batch in trace.get("batches", trace.get("resourceSpans", []))
        for scope in batch.get("scopeSpans", batch.get("instrumentationLibrarySpans", []))
    )
    return f"trace {trace_id}: log line in Loki after {log_seconds:.1f}s, trace in Tempo with {spans} span(s)"
