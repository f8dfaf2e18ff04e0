"""OTLP/gRPC span export: the OTLP/HTTP exporter's hand-written encoder behind one raw unary call.

The stock gRPC exporter builds the request with the stock protobuf encoder (several times our encoder's
cost a span, see `telemetry.otlp`) and retries with backoff while a batch ages. Here the bytes
`encode_export_request` writes go out as they are (no serializer on the call), one bounded attempt per
batch, exactly as over HTTP: `bench/instrumentation_overhead.py --variants bare,full,grpc` measures both.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import grpc

from telemetry.otlp import BoundedSpanExporter

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_DEFAULT_PORT = 4317


def grpc_target(endpoint: str) -> tuple[str, bool]:
    """`http(s)://host:port` as gRPC's `host:port` target, and whether it wants TLS (https)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if not parts.hostname:
        raise ValueError(f"no host in OTLP gRPC endpoint {endpoint!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or _DEFAULT_PORT}", parts.scheme == "https"


class OtlpGrpcSpanExporter(BoundedSpanExporter):
    """Sends span batches to `TraceService/Export` over one gRPC channel, each call bounded by `timeout`."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        super().__init__(endpoint)
        target, tls = grpc_target(endpoint)
        self._channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials())
            if tls
            else grpc.insecure_channel(target)
        )
        # No serializers: the request is already protobuf bytes, and the (empty) response is not read.
        self._export = self._channel.unary_unary(
            EXPORT_METHOD, request_serializer=None, response_deserializer=None
        )
        self._timeout = timeout

    def _send(self, request: bytes) -> str | None:
        try:
            self._export(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            return f"gRPC {code.name if code is not None else type(exc).__name__}"
        return None

    def shutdown(self) -> None:
        """Stop exporting; closing the channel cancels a call in flight."""
        self._shutdown = True
        self._channel.close()
