"""The six HTTP metric families every service exports (SPEC §3), on an injected registry."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, ProcessCollector, disable_created_metrics
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector

from telemetry.loop_metrics import (
    CounterChild,
    GaugeChild,
    HistogramChild,
    LoopCounter,
    LoopGauge,
    LoopHistogram,
)

# `_created` series double the series count and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

UNMATCHED_PATH = "<unmatched>"
"""The one `path` value shared by every request that matches no route."""
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
"""Methods kept as label values; any other (a client's free choice) becomes `OTHER`."""

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
SIZE_BUCKETS = (64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0)


def create_registry() -> CollectorRegistry:
    """A fresh registry carrying the process, platform and GC collectors."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


@dataclass(slots=True)
class RouteInstruments:
    """Metric children pre-bound for one (method, path), so the hot path does no label lookups."""

    duration: HistogramChild
    in_progress: GaugeChild
    request_size: HistogramChild
    response_size: HistogramChild
    _requests: LoopCounter
    _labels: tuple[str, str, str]
    _by_status: dict[int, CounterChild] = field(default_factory=dict)

    def requests(self, status_code: int) -> CounterChild:
        """The request counter child for `status_code`."""
        child = self._by_status.get(status_code)
        if child is None:
            child = self._requests.labels(*self._labels, str(status_code))
            self._by_status[status_code] = child
        return child


class HttpMetrics:
    """`fastapi_*` families: requests, duration, in progress, request/response size, exceptions.

    Lock-free `loop_metrics` families: they are updated only from the event-loop thread.
    """

    def __init__(self, registry: CollectorRegistry, app_name: str) -> None:
        self.app_name = app_name
        labels = ["app_name", "method", "path"]
        self.requests = LoopCounter(
            "fastapi_requests",
            "HTTP requests by method, route template and status code.",
            [*labels, "status_code"],
            registry,
        )
        self.duration = LoopHistogram(
            "fastapi_requests_duration_seconds",
            "HTTP request duration in seconds, by route template.",
            labels,
            registry,
            DURATION_BUCKETS,
        )
        self.in_progress = LoopGauge(
            "fastapi_requests_in_progress",
            "HTTP requests being served right now.",
            labels,
            registry,
        )
        self.request_size = LoopHistogram(
            "fastapi_request_size_bytes",
            "HTTP request body size in bytes, as received.",
            labels,
            registry,
            SIZE_BUCKETS,
        )
        self.response_size = LoopHistogram(
            "fastapi_response_size_bytes",
            "HTTP response body size in bytes, as sent.",
            labels,
            registry,
            SIZE_BUCKETS,
        )
        self.exceptions = LoopCounter(
            "fastapi_exceptions",
            "Unhandled exceptions raised while serving HTTP requests, by type.",
            ["app_name", "exception_type"],
            registry,
        )
        self._routes: dict[tuple[str, str], RouteInstruments] = {}

    def route(self, method: str, path: str) -> RouteInstruments:
        """Pre-bound children for a normalised method and a route template (or `UNMATCHED_PATH`)."""
        key = (method, path)
        instruments = self._routes.get(key)
        if instruments is None:
            labels = (self.app_name, method, path)
            instruments = RouteInstruments(
                duration=self.duration.labels(*labels),
                in_progress=self.in_progress.labels(*labels),
                request_size=self.request_size.labels(*labels),
                response_size=self.response_size.labels(*labels),
                _requests=self.requests,
                _labels=labels,
            )
            self._routes[key] = instruments
        return instruments

    def count_exception(self, exc: BaseException) -> None:
        """Count one unhandled exception by its class name."""
        self.exceptions.labels(self.app_name, type(exc).__name__).inc()
