"""A strict fake of Tempo (BACKENDS.md): OTLP/HTTP protobuf in, `/ready`, `GET /api/traces/{id}` out.

It answers as Tempo 3 does: 200 with `{"batches": [...]}` whose ids are base64 (protobuf JSON), 404 for an
unknown id, 400 for an id that is not hex. Exporters can point `TEMPO_OTLP_HTTP_ENDPOINT` at it, so spans
really travel over OTLP, and the admin's `TEMPO_URL` reads them back.
"""

from __future__ import annotations

import json
import re
import threading
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
    """Spans received, grouped by lowercase hex trace id, kept as OTLP `ResourceSpans` per export."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._traces: dict[str, list[ResourceSpans]] = defaultdict(list)
        self.ready = True
        self.requests: list[str] = []

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
