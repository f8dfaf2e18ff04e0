"""A strict fake of Tempo (BACKENDS.md): OTLP/HTTP protobuf in, `/ready`, `GET /api/traces/{id}` out.

It answers as Tempo 3 does: 200 with `{"batches": [...]}` whose ids are base64 (protobuf JSON), 404 for an
unknown id, 400 for an id that is not hex. Exporters can point `TEMPO_OTLP_HTTP_ENDPOINT` at it, so spans
really travel over OTLP, and the admin's `TEMPO_URL` reads them back.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from support.loopback import LoopbackServer, QuietHandler

_TRACE_PATH = re.compile(r"^/api/traces/(?P<id>[^/?]+)$")
_HEX = re.compile(r"^[0-9a-fA-F]{1,32}$")


class TempoStore:
    """Spans received, grouped by lowercase hex trace id, kept as OTLP `ResourceSpans` per export.

    `max_live_traces` plays Tempo's per-tenant live-trace limit (`max_traces_per_user`): a span of a new
    trace beyond it is dropped and counted as `live_traces_exceeded` while the export still answers 200, as
    Tempo 3 does (BACKENDS.md); a trace stops being live after `live_seconds` without a span.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._traces: dict[str, list[ResourceSpans]] = defaultdict(list)
        self.ready = True
        self.requests: list[str] = []
        self.max_live_traces: int | None = None
        self.live_seconds = 5.0
        self._live: dict[str, float] = {}
        self.received_spans = 0
        self.discarded: dict[str, int] = {}

    def metrics_text(self) -> str:
        """`tempo_distributor_spans_received_total` and `tempo_discarded_spans_total{reason}`, as Tempo."""
        with self._lock:
            lines = [
                "# TYPE tempo_distributor_spans_received_total counter",
                f'tempo_distributor_spans_received_total{{tenant="single-tenant"}} {self.received_spans}',
                "# TYPE tempo_discarded_spans_total counter",
            ]
            lines += [
                f'tempo_discarded_spans_total{{reason="{reason}",tenant="single-tenant"}} {count}'
                for reason, count in sorted(self.discarded.items())
            ]
        return "\n".join(lines) + "\n"

    def _admit(self, trace_id: str, spans: int) -> bool:
        """Whether a trace's spans are kept under the live-trace limit (counting them either way)."""
        now = time.monotonic()
        self.received_spans += spans
        self._live = {tid: seen for tid, seen in self._live.items() if now - seen < self.live_seconds}
        limit = self.max_live_traces
        if trace_id not in self._live and limit is not None and len(self._live) >= limit:
            self.discarded["live_traces_exceeded"] = self.discarded.get("live_traces_exceeded", 0) + spans
            return False
        self._live[trace_id] = now
        return True

    def add(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            for resource_spans in request.resource_spans:
                by_trace: dict[str, ResourceSpans] = {}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        trace_id = span.trace_id.hex()
                        if trace_id not in by_trace:
                            part = ResourceSpans(resource=resource_spans.resource)
                            part.scope_spans.add(scope=scope_spans.scope)
                            by_trace[trace_id] = part
                        by_trace[trace_id].scope_spans[0].spans.append(span)
                for trace_id, part in by_trace.items():
                    if self._admit(trace_id, len(part.scope_spans[0].spans)):
                        self._traces[trace_id].append(part)

    def trace(self, trace_id: str) -> list[ResourceSpans] | None:
        with self._lock:
            parts = self._traces.get(trace_id.lower().rjust(32, "0"))
            return list(parts) if parts else None

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        """Every span of a trace as protobuf JSON (base64 ids), with its `service.name` under `service`."""
        out = []
        for part in self.trace(trace_id) or []:
            service = next(
                (a.value.string_value for a in part.resource.attributes if a.key == "service.name"), ""
            )
            for scope_spans in part.scope_spans:
                out.extend({**MessageToDict(span), "service": service} for span in scope_spans.spans)
        return out


class _TempoHandler(QuietHandler):
    server: Any

    def do_GET(self) -> None:  # noqa: N802 - http.server dispatches on this name
        store: TempoStore = self.server.store
        store.requests.append(f"GET {self.path}")
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self.reply(200, store.metrics_text().encode(), "text/plain; version=0.0.4")
            return
        if path == "/ready":
            if store.ready:
                self.reply(200, b"ready")
            else:
                self.reply(503, b"Ingester not ready: waiting for 15s after being ready")
            return
        match = _TRACE_PATH.match(path)
        if match is None:
            self.reply(404, b"404 page not found\n")
            return
        trace_id = match["id"]
        if not _HEX.match(trace_id):
            self.reply(400, f"failed to parse trace id {trace_id}: invalid hex".encode())
            return
        parts = store.trace(trace_id)
        if parts is None:
            self.reply(404, b"trace not found")
            return
        body = {"batches": [MessageToDict(part) for part in parts]}
        self.reply(200, json.dumps(body).encode(), "application/json")

    def do_POST(self) -> None:  # noqa: N802 - as above
        store: TempoStore = self.server.store
        store.requests.append(f"POST {self.path}")
        if self.path != "/v1/traces":
            self.reply(404, b"404 page not found\n")
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/x-protobuf":
            self.reply(415, b"unsupported content type")
            return
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(self.read_body())
        except Exception:
            self.reply(400, b"failed to decode protobuf")
            return
        store.add(request)
        self.reply(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")


class FakeTempo(LoopbackServer):
    """Tempo's query API and OTLP/HTTP receiver on one loopback port."""

    def __init__(self) -> None:
        self.store = TempoStore()
        super().__init__(_TempoHandler, store=self.store)
