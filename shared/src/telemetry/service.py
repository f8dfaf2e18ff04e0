"""What wires telemetry into a service: the `Telemetry` bundle, `instrument(app)`, and `serve()`."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import IO, TYPE_CHECKING

from litestar.exceptions import HTTPException
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from telemetry.export_metrics import SpanExportCollector
from telemetry.logs import JsonSink, configure_logging
from telemetry.metrics import HttpMetrics, create_registry
from telemetry.middleware import RouteResolver, TelemetryMiddleware
from telemetry.spans import LeanTracerProvider
from telemetry.tracing import create_tracer_provider, shutdown_tracer_provider

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import Scope
    from opentelemetry.sdk.trace.export import SpanExporter
    from prometheus_client import CollectorRegistry

    from telemetry.delivery import ForwardTransport
    from telemetry.forwarder import LogForwarder
    from telemetry.settings import TelemetrySettings

GC_YOUNG_THRESHOLD = 3000
"""Net allocations of GC-tracked objects between young-generation collections while serving (default 700).

Requests in flight keep their tasks, futures, timers and spans alive across collections, and an object freed
after a collection no longer lowers the count that triggers the next, so at 32 connections the gateway ran
437 young collections of ~0.33 ms each in ~5 s of proxied requests (~29 µs a request); at 3,000, 12 of
~1.1 ms in the same load (~3 µs a request), and 2 to 5 % less CPU per request side by side; a single
connection collects rarely either way (`gc.callbacks` timing; BENCHMARKS.md, "Proxying an OpenAI-compatible
upstream"). Pauses stay near a millisecond, under the gateway's own p99.
"""


@dataclass(slots=True)
class Telemetry:
    """One service's registry, HTTP metrics and tracer provider, created together from settings."""

    settings: TelemetrySettings
    registry: CollectorRegistry
    http: HttpMetrics
    tracer_provider: LeanTracerProvider
    log_sink: JsonSink
    log_forwarder: LogForwarder | None = None

    @classmethod
    def create(
        cls,
        settings: TelemetrySettings,
        *,
        registry: CollectorRegistry | None = None,
        exporter: SpanExporter | None = None,
        log_stream: IO[bytes] | None = None,
    ) -> Telemetry:
        """Build the bundle and configure JSON logging; `exporter`/`log_stream` let tests capture output.

        With `LOG_FORWARD_URL` set, the log sink's lines are forwarded there too (see `forward_logs`).
        """
        log_sink = configure_logging(settings, log_stream)
        registry = registry if registry is not None else create_registry()
        tracer_provider = create_tracer_provider(settings, exporter)
        registry.register(SpanExportCollector(tracer_provider))
        telemetry = cls(
            settings=settings,
            registry=registry,
            http=HttpMetrics(registry, settings.app_name),
            tracer_provider=tracer_provider,
            log_sink=log_sink,
        )
        if settings.log_forward_url is not None:
            telemetry.forward_logs()
        return telemetry

    def forward_logs(self, transport: ForwardTransport | None = None) -> LogForwarder | None:
        """Send every line the log sink writes through `transport` too (default: to `LOG_FORWARD_URL`).

        Lines queue from now on; the worker runs while the lifespan does. Its metrics join the registry.
        """
        if self.log_forwarder is not None:
            msg = "log forwarding is already on"
            raise RuntimeError(msg)
        # Imported here: stdout-only services never need the forwarder, its thread and its HTTP connection.
        from telemetry.forwarder import create_forwarder  # noqa: PLC0415

        sink = self.log_sink
        forwarder = create_forwarder(self.settings, self.registry, sink.write_local, transport, sink.lock)
        if forwarder is not None:
            self.log_forwarder = forwarder
            sink.forward_to(forwarder)
        return forwarder

    @property
    def tracer(self) -> trace.Tracer:
        """The tracer services use for their own spans."""
        return self.tracer_provider.get_tracer(self.settings.service_name, self.settings.service_version)

    @asynccontextmanager
    async def lifespan(self, _app: Litestar) -> AsyncIterator[None]:
        """Freeze the start-up heap for the GC; run the log forwarder; at shutdown, flush both, bounded.

        Spans waiting for their batch outlive their request, so the cyclic GC runs while serving; frozen,
        the ~50k objects of imports and app set-up are no longer traversed by each full collection. The
        young generation collects after `GC_YOUNG_THRESHOLD` net allocations instead of 700 (see there). Spans
        and forwarded lines are flushed side by side, each within its own bound (3 s), so a dead Tempo or
        log-shipper cannot hold the process; the event loop keeps running meanwhile.
        """
        gc.collect()  # garbage that exists now would otherwise be frozen with the rest, for good
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        forwarder = self.log_forwarder
        if forwarder is not None:
            forwarder.start()
        try:
            yield
        finally:
            flushes = [asyncio.to_thread(shutdown_tracer_provider, self.tracer_provider)]
            if forwarder is not None:
                flushes.append(asyncio.to_thread(forwarder.close, partial(self.log_sink.forward_to, None)))
            await asyncio.gather(*flushes)


def instrument(app: Litestar, telemetry: Telemetry) -> Litestar:
    """Wrap `app` from the outside with `TelemetryMiddleware` and count unhandled exceptions."""
    settings = telemetry.settings
    app.asgi_handler = TelemetryMiddleware(
        app.asgi_handler,
        route_resolver=RouteResolver(app),
        metrics=telemetry.http,
        tracer=telemetry.tracer,
        exclude_paths=settings.metrics_exclude_paths,
        access_log=telemetry.log_sink.write_event if settings.access_log else None,
    )
    app.after_exception.append(partial(_record_exception, telemetry.http))
    return app


async def _record_exception(metrics: HttpMetrics, exc: Exception, _scope: Scope) -> None:
    """Litestar turns handler exceptions into responses; count and trace the ones that become a 5xx."""
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        return
    metrics.count_exception(exc)
    span = trace.get_current_span()
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def serve(factory: Callable[[], Litestar], settings: TelemetrySettings) -> None:
    """Run `factory()` under uvicorn on HOST/PORT with our logging (uvicorn's own config disabled).

    Answers carry no `Server` header (uvicorn's default names itself); `Date` stays, as HTTP requires. No
    service speaks WebSocket, so uvicorn's WebSocket support stays off (`ws="none"`): its default would import
    the `websockets` library, ~1 MB of RSS never used. An upgrade request is answered as plain HTTP.
    """
    import uvicorn  # noqa: PLC0415 - only entry points need the server

    app = factory()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=10,
        server_header=False,  # see the docstring: the server software is not advertised
        ws="none",  # see the docstring: no WebSocket routes
    )
