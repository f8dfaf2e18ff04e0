"""The tracer provider (SPEC §5 resource, OTEL_* sampler) and its bounded OTLP export to Tempo."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)

from telemetry.spans import BatchExportProcessor, LeanTracerProvider

if TYPE_CHECKING:
    from telemetry.settings import TelemetrySettings

SHUTDOWN_DEADLINE_SECONDS = 3.0
"""Hard bound on flushing spans at shutdown, so a dead Tempo never holds a deploy."""


def create_sampler(settings: TelemetrySettings) -> Sampler:
    """The sampler named by `OTEL_TRACES_SAMPLER` with `OTEL_TRACES_SAMPLER_ARG`."""
    ratio = settings.otel_traces_sampler_arg
    samplers: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
        "parentbased_always_on": ParentBased(ALWAYS_ON),
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": ParentBasedTraceIdRatio(ratio),
    }
    return samplers[settings.otel_traces_sampler]


def create_resource(settings: TelemetrySettings) -> Resource:
    """`service.name`, `service.version` and `deployment.environment` from settings."""
    return Resource.create(
        {
            "service.name": settings.service_name,
            "service.version": settings.service_version,
            "deployment.environment": settings.environment,
            "service.namespace": settings.app_name,
        }
    )


def create_exporter(settings: TelemetrySettings) -> SpanExporter:
    """An OTLP exporter over gRPC or HTTP, each export bounded by `OTEL_EXPORTER_OTLP_TIMEOUT`."""
    timeout = settings.otel_exporter_otlp_timeout / 1000
    if settings.otel_exporter_otlp_protocol == "grpc":
        from telemetry.otlp_grpc import OtlpGrpcSpanExporter  # noqa: PLC0415 - grpc is heavy; load it only when chosen

        return OtlpGrpcSpanExporter(settings.tempo_otlp_grpc_endpoint, timeout=timeout)
    # Imported here: a process with tracing off never needs the encoder and its HTTP connection.
    from telemetry.otlp import OtlpHttpSpanExporter  # noqa: PLC0415

    return OtlpHttpSpanExporter(settings.tempo_otlp_http_endpoint.rstrip("/") + "/v1/traces", timeout=timeout)


def create_tracer_provider(
    settings: TelemetrySettings, exporter: SpanExporter | None = None
) -> LeanTracerProvider:
    """A provider exporting in batches to Tempo when enabled; `exporter` overrides the OTLP one (tests)."""
    if exporter is None and settings.tempo_enabled:
        exporter = create_exporter(settings)
    processor = None
    if exporter is not None:
        processor = BatchExportProcessor(
            exporter,
            max_queue=settings.otel_bsp_max_queue_size,
            batch_size=min(settings.otel_bsp_max_export_batch_size, settings.otel_bsp_max_queue_size),
            delay_seconds=settings.otel_bsp_schedule_delay / 1000,
        )
    return LeanTracerProvider(create_resource(settings), create_sampler(settings), processor)


def shutdown_tracer_provider(
    provider: LeanTracerProvider, deadline: float = SHUTDOWN_DEADLINE_SECONDS
) -> bool:
    """Flush and stop `provider` within `deadline` seconds; False if it had to be abandoned."""
    worker = threading.Thread(target=provider.shutdown, args=(deadline,), name="otel-shutdown", daemon=True)
    worker.start()
    worker.join(deadline)
    return not worker.is_alive()
