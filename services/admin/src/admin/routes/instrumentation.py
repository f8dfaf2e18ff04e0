"""`/api/instrumentation/*`: reachability of the stack, trace context, Loki/Tempo config, test signals."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import Provide
from litestar.params import QueryParameter
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from admin.auth import ADMIN_GUARDS, ADMIN_SECURITY
from admin.discards import Discard
from admin.environment import EnvironmentVariable, environment_variables, redacted_settings
from admin.openapi import ADMIN_RESPONSES, ADMIN_WITH_QUERY_RESPONSES
from admin.probes import ProbeResult, overall
from admin.state import Admin, provide_admin
from admin.synthetic import TestLog, TestTrace
from admin.upstream import public_url


class InstrumentationHealth(msgspec.Struct, frozen=True, kw_only=True):
    """Reachability of every part of the stack; `degraded` when any enabled part is down or discarding."""

    status: Literal["ok", "degraded"]
    checks: list[ProbeResult]
    reasons: list[str]
    discards: list[Discard]
    """Spans and lines Tempo, Loki, the exporters, the shipper or the forwarders discarded lately."""
    discards_checked: bool
    """False when Prometheus could not be asked (its probe says why); then no discard is known."""


class TraceContext(msgspec.Struct, frozen=True, kw_only=True):
    """The ids of the span serving this request."""

    trace_id: str | None
    span_id: str | None
    sampled: bool
    traceparent: str | None
    """This request's context in W3C form (what an outbound call would send)."""
    propagated: bool
    """The request arrived with a `traceparent` it continued."""


class LokiStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Loki as configured here, and whether it is ready."""

    enabled: bool
    url: str
    push_url: str
    ready: ProbeResult


class TempoStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Tempo as configured here (export and query sides), and whether it is ready."""

    enabled: bool
    url: str
    otlp_http_endpoint: str
    otlp_grpc_endpoint: str
    protocol: str
    sampler: str
    sampler_arg: float
    ready: ProbeResult


class EffectiveConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting by variable name, secrets redacted."""

    service: str
    settings: dict[str, Any]


class EnvironmentVariables(msgspec.Struct, frozen=True, kw_only=True):
    """The allowlisted variables set in this process."""

    variables: list[EnvironmentVariable]


_PROPAGATOR = TraceContextTextMapPropagator()
# Route handler options of the admin endpoints: the key guard, and its scheme and errors in the schema.
_ADMIN: dict[str, Any] = {"guards": ADMIN_GUARDS, "security": ADMIN_SECURITY, "responses": ADMIN_RESPONSES}
_ADMIN_WITH_QUERY: dict[str, Any] = {**_ADMIN, "responses": ADMIN_WITH_QUERY_RESPONSES}

Verify = Annotated[
    bool,
    QueryParameter(name="verify", description="Poll the backend (bounded) and report whether it arrived."),
]


class InstrumentationController(Controller):
    """Health and trace context are open; everything revealing config or creating data needs the admin key."""

    path = "/api/instrumentation"
    tags = ["instrumentation"]  # noqa: RUF012 - Litestar's own class attribute
    dependencies = {"admin": Provide(provide_admin, sync_to_thread=False)}  # noqa: RUF012 - as above

    @get("/health")
    async def health(self, admin: Admin) -> InstrumentationHealth:
        """Gateway, log shipper, Prometheus, Loki and Tempo probed, and recent discards found, concurrently.

        Cached a few seconds. Discards are asked of Prometheus (Tempo's, Loki's, the exporters', the
        shipper's and the forwarders' counters); each comes with its fix.
        """
        checks, report = await asyncio.gather(admin.prober.check_all(), admin.discards.report())
        reasons = [f"{check.name}: {check.reason}" for check in checks if check.status == "down"]
        reasons += [discard.describe() for discard in report.discards]
        status = "degraded" if report.discards else overall(checks)
        return InstrumentationHealth(
            status=status,
            checks=checks,
            reasons=reasons,
            discards=report.discards,
            discards_checked=report.checked,
        )

    @get("/trace-context", sync_to_thread=False)
    def trace_context(self, request: Request[Any, Any, Any]) -> TraceContext:
        """The current request's trace and span ids (send a `traceparent` to see it continued)."""
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return TraceContext(
                trace_id=None, span_id=None, sampled=False, traceparent=None, propagated=False
            )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return TraceContext(
            trace_id=format(context.trace_id, "032x"),
            span_id=format(context.span_id, "016x"),
            sampled=context.trace_flags.sampled,
            traceparent=carrier.get("traceparent"),
            propagated="traceparent" in request.headers,
        )

    @get("/loki/status", **_ADMIN)
    async def loki_status(self, admin: Admin) -> LokiStatus:
        """Loki's URL, push URL, whether logs go there, and its readiness."""
        settings = admin.settings
        return LokiStatus(
            enabled=settings.loki_enabled,
            url=public_url(settings.loki_url),
            push_url=public_url(settings.loki_push_url),
            ready=await admin.prober.check("loki"),
        )

    @get("/tempo/status", **_ADMIN)
    async def tempo_status(self, admin: Admin) -> TempoStatus:
        """Tempo's query URL, OTLP endpoints, protocol, sampler and readiness."""
        settings = admin.settings
        return TempoStatus(
            enabled=settings.tempo_enabled,
            url=public_url(settings.tempo_url),
            otlp_http_endpoint=public_url(settings.tempo_otlp_http_endpoint),
            otlp_grpc_endpoint=public_url(settings.tempo_otlp_grpc_endpoint),
            protocol=settings.otel_exporter_otlp_protocol,
            sampler=settings.otel_traces_sampler,
            sampler_arg=settings.otel_traces_sampler_arg,
            ready=await admin.prober.check("tempo"),
        )

    @get("/config", sync_to_thread=False, **_ADMIN)
    def config(self, admin: Admin) -> EffectiveConfig:
        """The complete effective configuration, secrets redacted."""
        settings = redacted_settings(admin.settings)
        return EffectiveConfig(service=admin.settings.service_name, settings=settings)

    @post("/test-trace", status_code=200, **_ADMIN_WITH_QUERY)
    async def test_trace(self, admin: Admin, verify: Verify = False) -> TestTrace:  # noqa: FBT002 - a query parameter
        """A trace of four spans crossing admin → gateway; `?verify=true` waits (bounded) for it in Tempo."""
        return await admin.signals.test_trace(verify=verify)

    @post("/test-log", status_code=200, **_ADMIN_WITH_QUERY)
    async def test_log(self, admin: Admin, verify: Verify = False) -> TestLog:  # noqa: FBT002 - a query parameter
        """INFO, WARNING and ERROR lines with one trace id; `?verify=true` waits (bounded) for Loki."""
        return await admin.signals.test_log(verify=verify)

    @get("/environment-variables", sync_to_thread=False, **_ADMIN)
    def environment(self) -> EnvironmentVariables:
        """Allowlisted environment variables, every secret masked."""
        return EnvironmentVariables(variables=environment_variables())
