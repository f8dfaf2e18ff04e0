"""Admin ↔ gateway in one process: trace context crosses by headers alone; the workload fills every family."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from admin.app import create_app as create_admin
from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from support.admin_app import BEARER, admin_settings
from telemetry import Telemetry

GATEWAY_KEY = "unit-test-gateway-key"


@pytest.fixture
def anyio_backend():
    return "asyncio"


class ForwardTransport(httpx.AsyncBaseTransport):
    """Sends the admin's outbound requests to an in-process app, recording the headers it sent.

    Each call runs in an empty OpenTelemetry context, so the gateway can only learn the trace from the
    `traceparent` header, as it would across a network.
    """

    def __init__(self, client: AsyncTestClient[Any]) -> None:
        self.client = client
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        token = otel_context.attach(Context())
        try:
            response = await self.client.request(
                request.method,
                request.url.raw_path.decode(),
                headers={k: v for k, v in request.headers.items() if k != "host"},
                content=await request.aread(),
            )
        finally:
            otel_context.detach(token)
        return httpx.Response(response.status_code, headers=response.headers, content=response.content)


@pytest.fixture
async def stack(tmp_path, log_capture) -> AsyncIterator[dict[str, Any]]:
    """An in-process gateway (local provider, bootstrap key) and an admin routed to it, spans captured."""
    gateway_exporter, admin_exporter = InMemorySpanExporter(), InMemorySpanExporter()
    gateway_settings = GatewaySettings(
        tempo_enabled=False,
        environment="test",
        gateway_db_path=str(tmp_path / "gateway.db"),
        gateway_bootstrap_api_key=GATEWAY_KEY,
    )
    gateway_telemetry = Telemetry.create(gateway_settings, exporter=gateway_exporter, log_stream=log_capture)
    settings = admin_settings(gateway_url="http://gateway:8000", gateway_api_key=GATEWAY_KEY)
    admin_telemetry = Telemetry.create(settings, exporter=admin_exporter, log_stream=log_capture)
    async with AsyncTestClient(create_gateway(gateway_settings, gateway_telemetry)) as gateway:
        transport = ForwardTransport(gateway)
        async with AsyncTestClient(create_admin(settings, admin_telemetry, transport=transport)) as admin:
            yield {
                "admin": admin,
                "transport": transport,
                "gateway_telemetry": gateway_telemetry,
                "admin_telemetry": admin_telemetry,
                "gateway_exporter": gateway_exporter,
                "admin_exporter": admin_exporter,
            }
    gateway_telemetry.tracer_provider.shutdown()
    admin_telemetry.tracer_provider.shutdown()


def spans_of(telemetry: Telemetry, exporter: InMemorySpanExporter, trace_id: str) -> list[Any]:
    telemetry.tracer_provider.force_flush()
    return [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]


class TestTracePropagation:
    @pytest.mark.anyio
    async def test_gateway_server_span_is_child_of_admin_client_span(self, stack):
        """The test trace crosses into the gateway: its server span's parent is the admin's client span."""
        response = await stack["admin"].post("/api/instrumentation/test-trace", headers=BEARER)
        body = response.json()
        assert body["gateway"] == {"reached": True, "status_code": 200, "reason": None}
        admin_spans = spans_of(stack["admin_telemetry"], stack["admin_exporter"], body["trace_id"])
        gateway_spans = spans_of(stack["gateway_telemetry"], stack["gateway_exporter"], body["trace_id"])
        (client,) = [span for span in admin_spans if span.kind == SpanKind.CLIENT]
        (server,) = [span for span in gateway_spans if span.kind == SpanKind.SERVER]
        assert server.name == "GET /api/users/{user_id}"
        assert server.parent.is_remote
        assert server.parent.span_id == client.context.span_id
        assert server.resource.attributes["service.name"] == "gatewayz-api"
        assert len(admin_spans) + len(gateway_spans) >= 4
        sent = stack["transport"].sent[-1]
        assert sent.headers["traceparent"].split("-")[1:3] == [
            body["trace_id"],
            format(client.context.span_id, "016x"),
        ]


class TestWorkloadThroughGateway:
    @pytest.mark.anyio
    async def test_every_inference_family_gets_samples(self, stack):
        """One run drives users, models, chat (miss, hit, stream, 404, 401): the gateway's families fill."""
        body = (await stack["admin"].post("/api/metrics/test")).json()
        statuses = [step["status_code"] for step in body["requests"]]
        assert statuses == [200, 200, 200, 404, 200, 200, 200, 200, 404, 401], body
        assert body["skipped"] == []
        assert body["model"]
        registry = stack["gateway_telemetry"].registry
        families = {family.name: family for family in registry.collect()}
        for name in (
            "model_inference_requests",
            "model_inference_duration_seconds",
            "tokens_used",
            "credits_used",
        ):
            assert any(sample.value > 0 for sample in families[name].samples), name
        assert registry.get_sample_value("cache_hits_total", {"cache_name": "completions"}) >= 1
        assert registry.get_sample_value("cache_misses_total", {"cache_name": "completions"}) >= 1
