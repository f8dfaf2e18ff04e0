"""A minimal HTTP receiver for benchmarks: reads each POST and answers 200 (OTLP exports, and `/ingest`
batches of the log forwarder, which a 200 acknowledges)."""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Tempo and the OpenTelemetry Collector answer
    received = 0

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        Handler.received += length
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return


def grpc_sink(port: int) -> object:
    """`TraceService/Export` answered with an empty response, the request read as raw bytes (Tempo's work
    of decoding it is not the service's cost)."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 - only the sink needs them

    import grpc  # noqa: PLC0415

    def export(request: bytes, _context: object) -> bytes:
        Handler.received += len(request)
        return b""

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(export)},
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def main() -> None:
    port = int(sys.argv[1])
    server = grpc_sink(port + 1)  # kept referenced while serving
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    del server


if __name__ == "__main__":
    main()
