"""Shared pieces for the log-shipper unit tests: a parser, a registry-backed metrics object, anyio."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from log_shipper.labels import StreamLabels
from log_shipper.metrics import ShipperMetrics
from log_shipper.parser import LineParser


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry) -> ShipperMetrics:
    return ShipperMetrics(registry)


@pytest.fixture
def parser() -> LineParser:
    return LineParser(StreamLabels("test", {"team": "obs"}, "fallback-svc"), 1024)
