"""Admin apps on loopback: every dependency dead (a closed port) unless a test points it at a fake."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from admin.app import create_app
from support.admin_app import admin_settings
from telemetry import Telemetry

AdminClientFactory = Callable[..., TestClient[Litestar]]


@pytest.fixture
def make_admin(span_exporter: InMemorySpanExporter, log_capture) -> Iterator[AdminClientFactory]:
    """Build an admin app from settings overrides and open a TestClient on it (closed at teardown)."""
    with ExitStack() as stack:

        def make(telemetry: Telemetry | None = None, **overrides: Any) -> TestClient[Litestar]:
            settings = admin_settings(**overrides)
            if telemetry is None:
                telemetry = Telemetry.create(settings, exporter=span_exporter, log_stream=log_capture)
                stack.callback(telemetry.tracer_provider.shutdown)
            return stack.enter_context(TestClient(create_app(settings, telemetry)))

        yield make


@pytest.fixture
def admin(make_admin: AdminClientFactory) -> TestClient[Litestar]:
    """An admin app with a key configured and every dependency dead."""
    return make_admin()
