"""What wires telemetry into a service: the `Telemetry` bundle, `instrument(app)`, and `serve()`."""

from __future__ import annotations

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

    from telemetry.settings import TelemetrySettings


@dataclass(slots=True)
class Telemetry:
    """One service's registry, HTTP metrics and tracer provider, created together from settings."""

    settings: TelemetrySettings
    registry: CollectorRegistry
    http: HttpMetrics
    tracer_provider: LeanTracerProvider
    log_sink: JsonSink

    @classmethod
    def create(
        cls,
        settings: TelemetrySettings,
        *,
        registry: CollectorRegistry | None = None,
        exporter: SpanExporter | None = None,
        log_stream: IO[bytes] | None = None,
    ) -> Telemetry:
        """Build the bundle and configure JSON logging; `exporter`/`log_stream` let tests capture output."""
        log_sink = configure_logging(settings, log_stream)
        registry = registry if registry is not None else create_registry()
        tracer_provider = create_tracer_provider(settings, exporter)
        registry.register(SpanExportCollector(tracer_provider))
        return cls(
            settings=settings,
            registry=registry,
            http=HttpMetrics(registry, settings.app_name),
            tracer_provider=tracer_provider,
            log_sink=log_sink,
        )

    @property
    def tracer(self) -> trace.Tracer:
        """The tracer services use for their own spans."""
        return self.tracer_provider.get_tracer(self.settings.service_name, self.settings.service_version)

    @asynccontextmanager
    async def lifespan(self, _app: Litestar) -> AsyncIterator[None]:
        """Freeze the start-up heap for the GC; at shutdown, flush spans within a bound.

        Spans waiting for their batch outlive their request, so the cyclic GC runs while serving; frozen,
        the ~50k objects of imports and app set-up are no longer traversed by each full collection. The
        flush is bounded so a dead Tempo cannot hold the process.
        """
        gc.collect()  # garbage that exists now would otherwise be frozen with the rest, for good
        gc.freeze()
        try:
            yield
        finally:
            shutdown_tracer_provider(self.tracer_provider)


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
    """Run `factory()` under uvicorn on HOST/PORT with our logging (uvicorn's own config disabled)."""
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
    )
