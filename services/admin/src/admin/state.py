"""Everything the admin routes use, built once by `create_app` and kept on `app.state.admin`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from litestar.datastructures import State
from litestar.params import SkipValidation

from admin.auth import AdminKeyGuard
from admin.discards import DiscardFinder
from admin.limiter import SharedWindow, SlidingWindowLimiter
from admin.loki import LokiClient
from admin.probes import Prober
from admin.prometheus import PrometheusClient
from admin.settings import AdminSettings
from admin.summary import SummaryReader
from admin.synthetic import SignalEmitter
from admin.tempo import TempoClient
from admin.upstream import Upstream
from admin.workload import Workload
from telemetry import Telemetry

if TYPE_CHECKING:
    from telemetry.shared_redis import SharedRedis


@dataclass(slots=True)
class ScrapeRecord:
    """When this service's own `/metrics` was last read, for `/api/metrics/status`."""

    count: int = 0
    last_at: float | None = None

    def seen(self) -> None:
        """Note one read of `/metrics`."""
        self.count += 1
        self.last_at = time.monotonic()

    def seconds_ago(self) -> float | None:
        """Age of the last read, if any."""
        return None if self.last_at is None else round(time.monotonic() - self.last_at, 3)


@dataclass(slots=True)
class AdminState:
    """The admin service's collaborators, sharing one `Upstream` (one pooled HTTP client)."""

    settings: AdminSettings
    telemetry: Telemetry
    upstream: Upstream
    guard: AdminKeyGuard
    prober: Prober
    prometheus: PrometheusClient
    discards: DiscardFinder
    summary: SummaryReader
    workload: Workload
    workload_limiter: SlidingWindowLimiter
    signals: SignalEmitter
    redis: SharedRedis | None = None
    scrapes: ScrapeRecord = field(default_factory=ScrapeRecord)

    @classmethod
    def create(cls, settings: AdminSettings, telemetry: Telemetry, upstream: Upstream) -> AdminState:
        """Wire every collaborator from settings."""
        prometheus = PrometheusClient(upstream, settings)
        redis: SharedRedis | None = None
        if settings.redis_url:
            # Imported only with REDIS_URL: redis-py costs ~20 MB of RSS and ~0.6 s of start-up.
            from telemetry.shared_redis import SharedRedis  # noqa: PLC0415

            redis = SharedRedis(settings.redis_url, telemetry.registry)
        failures = SharedWindow(
            SlidingWindowLimiter(settings.admin_failed_attempts_per_minute),
            redis,
            prefix="gatewayz:admin:failed-auth:",
            operation="failed_auth",
        )
        return cls(
            settings=settings,
            telemetry=telemetry,
            upstream=upstream,
            guard=AdminKeyGuard(settings.admin_api_key, failures),
            prober=Prober(upstream, settings),
            prometheus=prometheus,
            discards=DiscardFinder(prometheus, settings),
            summary=SummaryReader(upstream, settings, telemetry.registry),
            workload=Workload(upstream, settings),
            workload_limiter=SlidingWindowLimiter(settings.metrics_test_runs_per_minute),
            signals=SignalEmitter(
                settings=settings,
                tracer_provider=telemetry.tracer_provider,
                upstream=upstream,
                tempo=TempoClient(upstream, settings),
                loki=LokiClient(upstream, settings),
            ),
            redis=redis,
        )


Admin = SkipValidation[AdminState]
"""How route handlers ask for the `AdminState` (an object, not request data: Litestar must not parse it)."""


def provide_admin(state: State) -> AdminState:
    """Litestar dependency: the app's `AdminState`."""
    return cast("AdminState", state.admin)
