"""Tracer provider: resource, sampler from OTEL_*, and a bounded shutdown with Tempo unreachable."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from litestar.testing import TestClient
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from gateway.settings import GatewaySettings
from telemetry import Telemetry
from telemetry.tracing import (
    create_resource,
    create_sampler,
    create_tracer_provider,
    shutdown_tracer_provider,
)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _BlackHole:
    """A TCP listener that accepts and never answers: the worst kind of dead collector."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def black_hole():
    hole = _BlackHole()
    yield hole
    hole.close()


class TestResourceAndSampler:
    def test_resource_attributes(self):
        """service.name, service.version and deployment.environment come from settings."""
        resource = create_resource(GatewaySettings(environment="staging", service_version="1.2.3"))
        assert resource.attributes["service.name"] == "gatewayz-api"
        assert resource.attributes["service.version"] == "1.2.3"
        assert resource.attributes["deployment.environment"] == "staging"

    def test_sampler_from_settings(self):
        """OTEL_TRACES_SAMPLER/_ARG pick the sampler; parent-based by default."""
        assert isinstance(create_sampler(GatewaySettings()), ParentBased)
        ratio = create_sampler(
            GatewaySettings(otel_traces_sampler="traceidratio", otel_traces_sampler_arg=0.5)
        )
        assert isinstance(ratio, TraceIdRatioBased)
        assert ratio.rate == 0.5

    def test_disabled_means_no_exporter(self):
        """TEMPO_ENABLED=false adds no span processor."""
        provider = create_tracer_provider(GatewaySettings(tempo_enabled=False))
        assert provider.processor is None


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
class TestTempoDown:
    def _settings(self, protocol: str, port: int) -> GatewaySettings:
        return GatewaySettings(
            otel_exporter_otlp_protocol=protocol,
            tempo_otlp_http_endpoint=f"http://127.0.0.1:{port}",
            tempo_otlp_grpc_endpoint=f"http://127.0.0.1:{port}",
        )

    def test_requests_not_slowed_and_shutdown_bounded(self, protocol, black_hole, build_app, log_capture):
        """With a collector that never answers, requests stay fast and shutdown takes <= 5 s."""
        telemetry = Telemetry.create(self._settings(protocol, black_hole.port), log_stream=log_capture)
        app = build_app(telemetry)
        started = time.perf_counter()
        with TestClient(app) as client:
            for n in range(200):
                assert client.get(f"/items/{n}").status_code == 200
            serving = time.perf_counter() - started
            shutdown_started = time.perf_counter()
        shutdown = time.perf_counter() - shutdown_started
        assert serving < 5.0
        assert shutdown <= 5.0

    def test_shutdown_bounded_with_port_closed(self, protocol):
        """Connection refused: the final flush gives up within the deadline."""
        provider = create_tracer_provider(self._settings(protocol, _closed_port()))
        tracer = provider.get_tracer("test")
        for _ in range(50):
            tracer.start_span("x").end()
        started = time.perf_counter()
        shutdown_tracer_provider(provider)
        assert time.perf_counter() - started <= 5.0


class TestLifespan:
    def test_startup_heap_is_frozen_for_the_gc(self, gateway_telemetry):
        """Objects alive at start-up move out of the GC's reach (queued spans make it run while serving)."""
        import asyncio  # noqa: PLC0415
        import gc  # noqa: PLC0415

        gc.unfreeze()
        assert gc.get_freeze_count() == 0

        async def frozen_while_serving() -> int:
            async with gateway_telemetry.lifespan(None):
                return gc.get_freeze_count()

        try:
            assert asyncio.run(frozen_while_serving()) > 10_000
        finally:
            gc.unfreeze()

    def test_the_young_generation_collects_less_often_while_serving(self, gateway_telemetry):
        """Requests in flight survive collections: at 700 the GC cost ~29 µs a request at 32 connections."""
        import asyncio  # noqa: PLC0415
        import gc  # noqa: PLC0415

        from telemetry.service import GC_YOUNG_THRESHOLD  # noqa: PLC0415

        before = gc.get_threshold()

        async def threshold_while_serving() -> tuple[int, int, int]:
            async with gateway_telemetry.lifespan(None):
                return gc.get_threshold()

        gc.set_threshold(700, *before[1:])  # CPython's default
        try:
            assert asyncio.run(threshold_while_serving()) == (GC_YOUNG_THRESHOLD, *before[1:])
        finally:
            gc.set_threshold(*before)
            gc.unfreeze()
