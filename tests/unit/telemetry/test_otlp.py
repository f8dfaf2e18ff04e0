"""The hand-written OTLP encoder produces what opentelemetry-proto decodes as the stock encoder's request."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation import set_span_in_context

from telemetry import otlp
from telemetry.otlp import OtlpHttpSpanExporter, encode_export_request
from telemetry.otlp_grpc import OtlpGrpcSpanExporter, grpc_target


def _spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "gatewayz-api", "n": 3, "ok": True}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("gateway", "1.0", schema_url="https://opentelemetry.io/schemas/1.26.0")
    other = provider.get_tracer("other")
    remote = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1")]),
    )
    with tracer.start_as_current_span(
        "POST /v1/chat/completions",
        context=set_span_in_context(__import__("opentelemetry").trace.NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "POST",
            "http.response.status_code": 502,
            "ratio": 0.25,
            "negative": -7,
            "flags": [True, False],
            "names": ["a", "b"],
            "sizes": [1, 2, 3],
            "blob": b"\x00\x01",
        },
        links=[Link(remote, {"link.kind": "retry"})],
    ) as span:
        span.add_event("retry", {"attempt": 2})
        with other.start_as_current_span("provider call", kind=SpanKind.CLIENT) as child:
            child.set_status(Status(StatusCode.ERROR, "upstream 500"))
        span.set_status(Status(StatusCode.OK))
    with tracer.start_as_current_span("root", kind=SpanKind.INTERNAL):
        pass
    return exporter.get_finished_spans()


class TestEncodeExportRequest:
    def test_decodes_to_the_stock_request(self):
        """Parsed with opentelemetry-proto, our bytes equal the stock encoder's message."""
        spans = _spans()
        ours = ExportTraceServiceRequest.FromString(encode_export_request(spans))
        stock = encode_spans(spans)
        assert ours == stock

    def test_a_large_batch_lets_go_of_the_gil_as_it_encodes(self, monkeypatch):
        """Every YIELD_EVERY spans the encoder yields (a waiting event loop runs within one slice), and the
        bytes are those of an encoding without yields."""
        spans = _spans() * 40
        monkeypatch.setattr(otlp.os, "sched_yield", lambda: None)
        unyielded = encode_export_request(spans)
        yields = []
        monkeypatch.setattr(otlp.os, "sched_yield", lambda: yields.append(1))
        assert encode_export_request(spans) == unyielded
        assert len(yields) == len(spans) // otlp.YIELD_EVERY > 2

    def test_memoised_attributes_keep_their_types(self):
        """True, 1 and 1.0 are equal dict keys; each still encodes as its own OTLP type, call after call."""
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        for value in (True, 1, 1.0, True, 1, 1.0):
            provider.get_tracer("t").start_span("same name", attributes={"x": value}).end()
        spans = exporter.get_finished_spans()
        for _ in range(2):  # the second pass is served from the memo
            assert ExportTraceServiceRequest.FromString(encode_export_request(spans)) == encode_spans(spans)

    def test_ids_and_names_survive(self):
        """Trace and span ids, names and the remote parent round-trip exactly."""
        spans = _spans()
        decoded = ExportTraceServiceRequest.FromString(encode_export_request(spans))
        names = [s.name for rs in decoded.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert sorted(names) == sorted(span.name for span in spans)
        server = next(
            s
            for rs in decoded.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
            if s.name.startswith("POST")
        )
        assert server.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert server.parent_span_id.hex() == "00f067aa0ba902b7"


class _Collector(BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []
    status = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).bodies.append(body)
        assert self.headers["content-type"] == "application/x-protobuf"
        assert self.path == "/v1/traces"
        self.send_response(type(self).status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        return


@pytest.fixture
def collector():
    _Collector.bodies = []
    _Collector.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


class TestOtlpHttpSpanExporter:
    def test_posts_decodable_protobuf(self, collector):
        """A batch arrives at /v1/traces as protobuf that decodes to the same spans."""
        exporter = OtlpHttpSpanExporter(f"http://127.0.0.1:{collector.server_port}/v1/traces", timeout=2)
        spans = _spans()
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        (body,) = _Collector.bodies
        assert ExportTraceServiceRequest.FromString(body) == encode_spans(spans)

    def test_failure_is_reported_not_raised(self, collector):
        """A 503 or a closed port yields FAILURE, never an exception in the export thread."""
        _Collector.status = 503
        exporter = OtlpHttpSpanExporter(f"http://127.0.0.1:{collector.server_port}/v1/traces", timeout=2)
        assert exporter.export(_spans()) is SpanExportResult.FAILURE
        exporter.shutdown()
        closed = OtlpHttpSpanExporter("http://127.0.0.1:9/v1/traces", timeout=1)
        assert closed.export(_spans()) is SpanExportResult.FAILURE


class _GrpcCollector:
    """A real gRPC server answering `TraceService/Export`, keeping each request's raw bytes."""

    def __init__(self, status: grpc.StatusCode | None = None) -> None:
        self.bodies: list[bytes] = []
        self.status = status
        self.server = grpc.server(ThreadPoolExecutor(max_workers=2))
        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(self._export)},
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.bodies.append(request)
        if self.status is not None:
            context.abort(self.status, "collector says no")
        return ExportTraceServiceResponse().SerializeToString()


@pytest.fixture
def grpc_collector():
    collector = _GrpcCollector()
    yield collector
    collector.server.stop(0)


class TestOtlpGrpcSpanExporter:
    def test_sends_the_same_request_as_http(self, grpc_collector):
        """A batch arrives at TraceService/Export as the bytes the HTTP exporter posts, the stock request."""
        exporter = OtlpGrpcSpanExporter(f"http://127.0.0.1:{grpc_collector.port}", timeout=2)
        spans = _spans()
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        (body,) = grpc_collector.bodies
        assert body == encode_export_request(spans)
        assert ExportTraceServiceRequest.FromString(body) == encode_spans(spans)
        exporter.shutdown()

    def test_failure_is_reported_not_raised(self, grpc_collector):
        """An error status or a closed port yields FAILURE within the timeout, never an exception."""
        grpc_collector.status = grpc.StatusCode.UNAVAILABLE
        exporter = OtlpGrpcSpanExporter(f"http://127.0.0.1:{grpc_collector.port}", timeout=2)
        assert exporter.export(_spans()) is SpanExportResult.FAILURE
        exporter.shutdown()
        assert exporter.export(_spans()) is SpanExportResult.FAILURE  # after shutdown: nothing is sent
        assert len(grpc_collector.bodies) == 1
        closed = OtlpGrpcSpanExporter("http://127.0.0.1:9", timeout=1)
        started = time.perf_counter()
        assert closed.export(_spans()) is SpanExportResult.FAILURE
        assert time.perf_counter() - started < 1.5
        closed.shutdown()

    @pytest.mark.parametrize(
        ("endpoint", "target", "tls"),
        [
            ("http://tempo:4317", "tempo:4317", False),
            ("https://tempo.example.com", "tempo.example.com:4317", True),
            ("tempo.railway.internal:4317", "tempo.railway.internal:4317", False),
            ("http://[::1]:4317", "[::1]:4317", False),
        ],
    )
    def test_target_from_the_endpoint_url(self, endpoint, target, tls):
        """TEMPO_OTLP_GRPC_ENDPOINT's URL becomes gRPC's host:port target; https asks for TLS."""
        assert grpc_target(endpoint) == (target, tls)
