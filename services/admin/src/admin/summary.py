"""`GET /api/metrics/summary`: every service's metric families, read from their live `/metrics`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from admin.cache import TtlCache
from admin.settings import AdminSettings
from admin.upstream import Upstream, UpstreamError, public_url


class Family(msgspec.Struct, frozen=True, kw_only=True):
    """A metric family as exposed: name, type, help and how many series it has right now."""

    name: str
    """Family name as the parser reports it (counters without `_total`)."""
    type: str
    """`counter`, `gauge`, `histogram`, `summary`, `info`, `unknown`, …"""
    help: str
    """Its HELP text."""
    series: int
    """Live samples in the exposition (histogram buckets, `_sum` and `_count` included)."""
    services: list[str]
    """Which services expose it."""


class ServiceMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """How reading one service's `/metrics` went."""

    service: str
    url: str
    status: Literal["ok", "unreachable"]
    families: int = 0
    series: int = 0
    reason: str | None = None


class MetricsSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The families across all services, merged by name."""

    services: list[ServiceMetrics]
    families: list[Family]
    family_count: int
    series_count: int


@dataclass(slots=True)
class _Merged:
    type: str
    help: str
    series: int = 0
    services: list[str] = field(default_factory=list)


class SummaryReader:
    """Fetches the gateway's and log shipper's `/metrics` concurrently and reads the admin's own registry."""

    def __init__(self, upstream: Upstream, settings: AdminSettings, registry: CollectorRegistry) -> None:
        self._upstream = upstream
        self._registry = registry
        self._own = settings.service_name
        self._remote = {
            "gatewayz-api": settings.gateway_url.rstrip("/") + "/metrics",
            "gatewayz-log-shipper": settings.log_shipper_url.rstrip("/") + "/metrics",
        }
        self._timeout = settings.probe_timeout_seconds
        self._cache: TtlCache[MetricsSummary] = TtlCache(settings.probe_cache_seconds)

    async def summary(self) -> MetricsSummary:
        """The merged summary, cached briefly so this endpoint cannot amplify load on the services."""
        return await self._cache.get("summary", self._summary)

    async def _summary(self) -> MetricsSummary:
        own_text = generate_latest(self._registry).decode()
        fetched = await asyncio.gather(*(self._fetch(url) for url in self._remote.values()))
        texts: list[tuple[str, str, str | None, str | None]] = [(self._own, "local", own_text, None)]
        texts += [
            (service, public_url(url), text, reason)
            for (service, url), (text, reason) in zip(self._remote.items(), fetched, strict=True)
        ]
        merged: dict[str, _Merged] = {}
        services: list[ServiceMetrics] = []
        for service, url, text, reason in texts:
            if text is None:
                services.append(ServiceMetrics(service=service, url=url, status="unreachable", reason=reason))
                continue
            try:
                families = list(text_string_to_metric_families(text))
            except ValueError as exc:
                bad = f"unparseable exposition: {str(exc)[:200]}"
                services.append(ServiceMetrics(service=service, url=url, status="unreachable", reason=bad))
                continue
            for family in families:
                entry = merged.setdefault(family.name, _Merged(family.type, family.documentation))
                entry.series += len(family.samples)
                entry.services.append(service)
            series = sum(len(family.samples) for family in families)
            services.append(
                ServiceMetrics(service=service, url=url, status="ok", families=len(families), series=series)
            )
        families_out = [
            Family(name=name, type=entry.type, help=entry.help, series=entry.series, services=entry.services)
            for name, entry in sorted(merged.items())
        ]
        return MetricsSummary(
            services=services,
            families=families_out,
            family_count=len(families_out),
            series_count=sum(family.series for family in families_out),
        )

    async def _fetch(self, url: str) -> tuple[str | None, str | None]:
        """(exposition text, None) or (None, why not)."""
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._upstream.request("GET", url, route="/metrics", timeout=self._timeout)
        except UpstreamError as exc:
            return None, exc.reason
        except TimeoutError:
            return None, f"timed out after {self._timeout:g} s"
        if response.status_code != 200:
            return None, f"answered {response.status_code}"
        return response.text, None
