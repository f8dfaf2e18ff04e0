"""A server for the instrumentation benchmark: the same no-op route, bare or with full telemetry.

    python bench/instrumented_server.py VARIANT PORT [OTLP_HTTP_URL]   # VARIANT: one of VARIANTS below

`full` = HTTP metrics + a server span per request (default parent-based always-on sampling, batch-exported
over OTLP/HTTP to OTLP_HTTP_URL) + one JSON access line per request on stdout.
"""

from __future__ import annotations

import os
import sys

import uvicorn
from litestar import Litestar, get

from gateway.settings import GatewaySettings
from telemetry import Telemetry, instrument, metrics_endpoint


@get("/noop", sync_to_thread=False)
def noop() -> dict[str, str]:
    return {"status": "ok"}


VARIANTS = {
    "bare": "Litestar alone",
    "full": "metrics, spans exported over OTLP/HTTP, access line",
    "unexported": "full, but spans recorded and not exported (ablation)",
    "metrics": "metrics and access line, sampler always_off (ablation)",
    "forwarding": "full, and every log line also forwarded to $LOG_FORWARD_URL (the log forwarder)",
    "forwarding-gzip": "forwarding, batches gzip-compressed (LOG_FORWARD_GZIP=true)",
    "grpc": "full, spans exported over OTLP/gRPC (our encoder behind one raw call) to the sink's port + 1",
    "grpc-stock": "full, spans exported by the stock OTLP/gRPC exporter (opentelemetry-exporter-otlp)",
}


def build(variant: str, otlp_url: str | None) -> Litestar:
    if variant == "bare":
        return Litestar(route_handlers=[noop], logging_config=None)
    grpc_url = _grpc_url(otlp_url)
    settings = GatewaySettings(
        tempo_enabled=otlp_url is not None and variant in {"full", "forwarding", "forwarding-gzip", "grpc"},
        otel_exporter_otlp_protocol="grpc" if variant == "grpc" else "http/protobuf",
        tempo_otlp_grpc_endpoint=grpc_url,
        log_forward_url=os.environ["LOG_FORWARD_URL"] if variant.startswith("forwarding") else None,
        log_forward_gzip="true" if variant == "forwarding-gzip" else "auto",
        # served_instructions.py sets it high too: only full batches leave, and the rest at shutdown.
        log_forward_flush_seconds=float(os.environ.get("LOG_FORWARD_FLUSH_SECONDS", "1.0")),
        tempo_otlp_http_endpoint=otlp_url or "http://127.0.0.1:4318",
        otel_traces_sampler="always_off" if variant == "metrics" else "parentbased_always_on",
        # served_instructions.py sets it high so only full batches leave (timing-independent counts).
        otel_bsp_schedule_delay=int(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "1000")),
    )
    exporter = None
    if variant == "grpc-stock":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        exporter = OTLPSpanExporter(endpoint=grpc_url, insecure=True, timeout=2)
    telemetry = Telemetry.create(settings, exporter=exporter)
    app = Litestar(
        route_handlers=[noop, metrics_endpoint(telemetry.registry)],
        lifespan=[telemetry.lifespan],
        logging_config=None,
    )
    return instrument(app, telemetry)


def _grpc_url(otlp_url: str | None) -> str:
    """The sink's OTLP/gRPC port is its OTLP/HTTP port + 1 (`bench/otlp_sink.py`)."""
    if otlp_url is None:
        return "http://127.0.0.1:4317"
    host, port = otlp_url.rsplit(":", 1)
    return f"{host}:{int(port) + 1}"


def main() -> None:
    variant, port = sys.argv[1], int(sys.argv[2])
    otlp_url = sys.argv[3] if len(sys.argv) > 3 else None
    uvicorn.run(
        build(variant, otlp_url),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
