"""Fixtures shared by every test: settings, an in-memory span exporter, a captured log stream, and (started
on first use, once per session) a private PostgreSQL and Redis."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.settings import GatewaySettings
from support.postgres import PostgresServer
from support.redis_server import RedisServer
from telemetry import Telemetry


class LogCapture(io.BytesIO):
    """A byte stream the JSON sink writes to, read back as parsed lines."""

    def lines(self) -> list[dict[str, Any]]:
        return [msgspec.json.decode(line) for line in self.getvalue().splitlines() if line.strip()]

    def access_lines(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("message") == "Request completed"]


@pytest.fixture
def gateway_settings() -> GatewaySettings:
    return GatewaySettings(tempo_enabled=False, environment="test")


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def log_capture() -> LogCapture:
    return LogCapture()


@pytest.fixture
def gateway_telemetry(
    gateway_settings: GatewaySettings, span_exporter: InMemorySpanExporter, log_capture: LogCapture
) -> Iterator[Telemetry]:
    telemetry = Telemetry.create(gateway_settings, exporter=span_exporter, log_stream=log_capture)
    yield telemetry
    telemetry.tracer_provider.shutdown()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL on a free loopback port; `create_database()` gives each test its own database."""
    server = PostgresServer().start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Debian's redis-server on a free loopback port, no persistence; tests flush what they need empty."""
    server = RedisServer().start()
    yield server
    server.destroy()
