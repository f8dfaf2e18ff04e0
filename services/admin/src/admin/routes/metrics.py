"""`/api/metrics/*`: status, summary, synthetic workload, dashboard queries and scraping health."""

from __future__ import annotations

from typing import Literal

import msgspec
from litestar import Controller, get, post
from litestar.di import Provide

from admin.openapi import RATE_LIMITED_RESPONSES
from admin.prometheus import MetricsHealth
from admin.state import Admin, provide_admin
from admin.summary import MetricsSummary
from admin.workload import WorkloadResult
from telemetry import queries
from telemetry.errors import ApiError


class MetricsStatus(msgspec.Struct, frozen=True, kw_only=True):
    """`GET /api/metrics/status`: this service's registry collects, and whether a scraper has read it."""

    status: Literal["ok", "degraded"]
    registry_ok: bool
    families: int
    """Metric families in this service's registry."""
    scrape_seen: bool
    """`GET /metrics` was served at least once since start."""
    scrapes: int
    last_scrape_seconds_ago: float | None
    reason: str | None = None


class GrafanaQueries(msgspec.Struct, frozen=True, kw_only=True):
    """`GET /api/metrics/grafana-queries`: the query catalog the dashboards are generated from."""

    dashboards: list[dict[str, object]]
    logql: list[str]
    traceql: list[str]
    service_variable: str


_CATALOG = GrafanaQueries(
    dashboards=[msgspec.to_builtins(board) for board in queries.DASHBOARDS],
    logql=list(queries.LOGQL_QUERIES),
    traceql=list(queries.TRACEQL_QUERIES),
    service_variable=queries.SERVICE_VARIABLE,
)


class MetricsController(Controller):
    """Metrics of every service, read live; open to anyone who can reach the admin service."""

    path = "/api/metrics"
    tags = ["metrics"]  # noqa: RUF012 - Litestar's own class attribute
    dependencies = {"admin": Provide(provide_admin, sync_to_thread=False)}  # noqa: RUF012 - as above

    @get("/status", sync_to_thread=False)
    def status(self, admin: Admin) -> MetricsStatus:
        """Registry health, family count, and whether `/metrics` has been scraped."""
        scrapes = admin.scrapes
        try:
            families = len(list(admin.telemetry.registry.collect()))
        except Exception as exc:  # noqa: BLE001 - a broken collector is what this endpoint reports
            return MetricsStatus(
                status="degraded",
                registry_ok=False,
                families=0,
                scrape_seen=scrapes.count > 0,
                scrapes=scrapes.count,
                last_scrape_seconds_ago=scrapes.seconds_ago(),
                reason=f"collecting the registry failed: {type(exc).__name__}",
            )
        return MetricsStatus(
            status="ok",
            registry_ok=True,
            families=families,
            scrape_seen=scrapes.count > 0,
            scrapes=scrapes.count,
            last_scrape_seconds_ago=scrapes.seconds_ago(),
        )

    @get("/summary")
    async def summary(self, admin: Admin) -> MetricsSummary:
        """Families across the services with type, help and live series count (cached a few seconds)."""
        return await admin.summary.summary()

    @post("/test", status_code=200, responses=RATE_LIMITED_RESPONSES)
    async def test(self, admin: Admin) -> WorkloadResult:
        """Drive the fixed synthetic workload through the gateway; 429 when run too often."""
        wait = admin.workload_limiter.acquire("workload")
        if wait:
            limit = admin.workload_limiter.limit
            error = ApiError(429, f"the synthetic workload runs at most {limit} times a minute")
            error.headers = {"Retry-After": str(wait)}
            raise error
        return await admin.workload.run()

    @get("/grafana-queries", sync_to_thread=False)
    def grafana_queries(self) -> GrafanaQueries:
        """PromQL, LogQL and TraceQL exactly as the provisioned dashboards run them."""
        return _CATALOG

    @get("/health")
    async def health(self, admin: Admin) -> MetricsHealth:
        """Prometheus `up` per job with the last scrape age; `degraded` with reasons when anything is off."""
        return await admin.prometheus.health()
