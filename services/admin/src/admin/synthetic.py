"""Test signals on demand: a multi-span trace crossing into the gateway, and log lines at three levels."""

from __future__ import annotations

import asyncio
import time

import msgspec
from loguru import logger
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind

from admin.loki import LogCheck, LokiClient
from admin.settings import AdminSettings
from admin.tempo import TempoClient, TraceCheck
from admin.upstream import Upstream, UpstreamError
from telemetry.spans import LeanTracerProvider

TEST_LOG_LEVELS = ("INFO", "WARNING", "ERROR")
GATEWAY_SERVICE = "gatewayz-api"
_FLUSH_SECONDS = 3.0


class GatewayCall(msgspec.Struct, frozen=True, kw_only=True):
    """The test trace's call into the gateway."""

    reached: bool
    status_code: int | None = None
    reason: str | None = None


class TestTrace(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /api/instrumentation/test-trace`: the trace made and (`?verify=true`) whether Tempo has it."""

    trace_id: str
    sampled: bool
    """False when the sampler dropped it: it will never reach Tempo."""
    spans: list[str]
    """Names of the spans the admin service created (the gateway adds its server span)."""
    gateway: GatewayCall
    tempo: TraceCheck | None = None
    """Present with `?verify=true`."""


class TestLog(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /api/instrumentation/test-log`: the lines written and (`?verify=true`) whether Loki has them."""

    trace_id: str
    levels: list[str]
    query: str
    """LogQL that finds the lines."""
    loki: LogCheck | None = None
    """Present with `?verify=true`."""


class SignalEmitter:
    """Creates the test trace and test log lines, and confirms their arrival when asked."""

    def __init__(
        self,
        *,
        settings: AdminSettings,
        tracer_provider: LeanTracerProvider,
        upstream: Upstream,
        tempo: TempoClient,
        loki: LokiClient,
    ) -> None:
        self._settings = settings
        self._provider = tracer_provider
        self._tracer = tracer_provider.get_tracer(settings.service_name, settings.service_version)
        self._upstream = upstream
        self._tempo = tempo
        self._loki = loki

    async def test_trace(self, *, verify: bool) -> TestTrace:
        """A new root trace: root → prepare, root → client call → the gateway's server span."""
        request_span = trace.get_current_span().get_span_context()
        links = [Link(request_span)] if request_span.is_valid else []
        names = ["admin.test_trace", "admin.test_trace.prepare", "GET /api/users/{user_id}"]
        # A root of its own (an empty parent context), linked to the request that asked for it.
        with self._tracer.start_as_current_span(
            names[0],
            context=Context(),
            kind=SpanKind.INTERNAL,
            links=links,
            attributes={"gatewayz.test": True},
        ) as root:
            with self._tracer.start_as_current_span(names[1]) as prepare:
                prepare.set_attribute("gatewayz.test.target", self._settings.gateway_url)
            gateway = await self._call_gateway()
            context = root.get_span_context()
        trace_id = format(context.trace_id, "032x")
        logger.info("Test trace created", trace_id=trace_id, gateway_reached=gateway.reached)
        sampled = context.trace_flags.sampled
        result = TestTrace(trace_id=trace_id, sampled=sampled, spans=names, gateway=gateway)
        if not verify:
            return result
        return msgspec.structs.replace(result, tempo=await self._verify_trace(result))

    async def _call_gateway(self) -> GatewayCall:
        url = self._settings.gateway_url.rstrip("/") + "/api/users/1"
        try:
            response = await self._upstream.request(
                "GET", url, route="/api/users/{user_id}", timeout=self._settings.probe_timeout_seconds
            )
        except UpstreamError as exc:
            return GatewayCall(reached=False, reason=exc.reason)
        return GatewayCall(reached=True, status_code=response.status_code)

    async def _verify_trace(self, made: TestTrace) -> TraceCheck:
        if not self._settings.tempo_enabled:
            reason = "TEMPO_ENABLED=false: spans are not exported"
            return TraceCheck(found=False, complete=False, reason=reason)
        if not made.sampled:
            return TraceCheck(found=False, complete=False, reason="the sampler dropped this trace")
        # Our batch processor would otherwise hold the spans for up to its schedule delay.
        await asyncio.to_thread(self._provider.force_flush, int(_FLUSH_SECONDS * 1000))
        expected = {self._settings.service_name}
        if made.gateway.reached:
            expected.add(GATEWAY_SERVICE)
        return await self._tempo.verify(made.trace_id, frozenset(expected))

    async def test_log(self, *, verify: bool) -> TestLog:
        """INFO, WARNING and ERROR lines inside a new span, so they carry its trace and span ids."""
        since_ns = time.time_ns()
        with self._tracer.start_as_current_span("admin.test_log", context=Context()) as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            for sequence, level in enumerate(TEST_LOG_LEVELS, start=1):
                message = f"Instrumentation test log line ({level})"
                logger.log(level, message, test_log=True, sequence=sequence)
        query = self._loki.query_for(trace_id)
        result = TestLog(trace_id=trace_id, levels=list(TEST_LOG_LEVELS), query=query)
        if not verify:
            return result
        if not self._settings.loki_enabled:
            reason = "LOKI_ENABLED=false: logs are not shipped"
            check = LogCheck(found=False, query=result.query, reason=reason)
        else:
            check = await self._loki.verify(trace_id, frozenset(TEST_LOG_LEVELS), since_ns)
        return msgspec.structs.replace(result, loki=check)
