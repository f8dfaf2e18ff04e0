"""What the pipeline discarded lately, asked of Prometheus: one query per `telemetry.pipeline` source.

Tempo drops spans while answering exporters with success, and Loki's refusals are retried by the shipper,
so a stack whose every part is ready can still be losing data: this is what `/api/instrumentation/health`
adds to the readiness probes.
"""

from __future__ import annotations

import asyncio

import msgspec

from admin.cache import TtlCache
from admin.prometheus import PrometheusClient, QueryError
from admin.settings import AdminSettings
from admin.upstream import UpstreamError
from telemetry.pipeline import DISCARD_SOURCES, WINDOW, DiscardSource


class Discard(msgspec.Struct, frozen=True, kw_only=True):
    """Spans or lines one part of the pipeline discarded over the window, for one reason."""

    source: str
    """Where: `Tempo`, `Loki`, `span exporters`, `log-shipper`, `log forwarders`."""
    signal: str
    """`traces` or `logs`."""
    reason: str
    """The counter's `reason` label."""
    job: str | None
    """The scrape job, for the services' own counters."""
    count: float
    """How many over the window."""
    window: str
    """The window, e.g. `5m`."""
    fix: str
    """What to change."""

    def describe(self) -> str:
        """One line for the health report's reasons."""
        where = f"{self.source} ({self.job})" if self.job else self.source
        unit = "spans" if self.signal == "traces" else "lines"
        return f"{where} discarded {self.count:.0f} {unit} in {self.window} ({self.reason}): {self.fix}"


class DiscardReport(msgspec.Struct, frozen=True, kw_only=True):
    """The discards found; `checked` is false when Prometheus could not be asked (then none are known)."""

    checked: bool
    discards: list[Discard]


class DiscardFinder:
    """Runs every source's query concurrently; the report is cached for the probe cache time."""

    def __init__(self, prometheus: PrometheusClient, settings: AdminSettings) -> None:
        self._prometheus = prometheus
        self._cache: TtlCache[DiscardReport] = TtlCache(settings.probe_cache_seconds)

    async def report(self) -> DiscardReport:
        """Discards over the last window, by source and reason."""
        return await self._cache.get("discards", self._find)

    async def _find(self) -> DiscardReport:
        try:
            results = await asyncio.gather(*(self._prometheus.query(s.increase) for s in DISCARD_SOURCES))
        except (UpstreamError, QueryError, TimeoutError):
            return DiscardReport(checked=False, discards=[])
        found = [
            _discard(source, item)
            for source, vector in zip(DISCARD_SOURCES, results, strict=True)
            for item in vector
        ]
        return DiscardReport(checked=True, discards=[item for item in found if item is not None])


def _discard(source: DiscardSource, item: dict[str, object]) -> Discard | None:
    metric = item.get("metric")
    value = item.get("value")
    if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
        return None
    try:
        count = float(value[1])
    except (TypeError, ValueError):
        return None
    reason = str(metric.get("reason", ""))
    job = metric.get("job")
    return Discard(
        source=source.name,
        signal=source.signal,
        reason=reason,
        job=str(job) if job is not None else None,
        count=count,
        window=WINDOW,
        fix=source.fix(reason),
    )
