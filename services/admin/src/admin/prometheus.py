"""Asks Prometheus whether it scrapes each service: `up` per job and the age of the last scrape."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import msgspec

from admin.cache import TtlCache
from admin.settings import AdminSettings
from admin.upstream import Upstream, UpstreamError, public_url


class ScrapeTarget(msgspec.Struct, frozen=True, kw_only=True):
    """One series of `up`: a job/instance Prometheus scrapes."""

    job: str
    instance: str
    up: bool
    """True when the last scrape succeeded."""
    last_scrape_seconds_ago: float | None
    """Age of the last scrape (from `timestamp(up)`)."""


class MetricsHealth(msgspec.Struct, frozen=True, kw_only=True):
    """`GET /api/metrics/health`: is Prometheus up, and is it scraping every expected service."""

    status: Literal["ok", "degraded"]
    prometheus_url: str
    prometheus_reachable: bool
    targets: list[ScrapeTarget]
    missing_jobs: list[str]
    """Expected jobs (`PROMETHEUS_JOBS`) with no `up` series."""
    down_jobs: list[str]
    """Jobs whose last scrape failed."""
    reasons: list[str]
    """Why the status is degraded, one line per problem."""


class QueryError(Exception):
    """Prometheus answered, but not with a usable vector."""


class PrometheusClient:
    """Instant queries against Prometheus' HTTP API (`/api/v1/query`), results cached briefly."""

    def __init__(self, upstream: Upstream, settings: AdminSettings) -> None:
        self._upstream = upstream
        self._url = settings.prometheus_url.rstrip("/") + "/api/v1/query"
        self._shown_url = public_url(settings.prometheus_url)
        self._timeout = settings.probe_timeout_seconds
        self._expected = settings.prometheus_jobs
        self._cache: TtlCache[MetricsHealth] = TtlCache(settings.probe_cache_seconds)

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """The `data.result` vector of an instant query; `UpstreamError`/`QueryError` when there is none."""
        async with asyncio.timeout(self._timeout):
            response = await self._upstream.request(
                "GET", self._url, route="/api/v1/query", timeout=self._timeout, params={"query": promql}
            )
        try:
            body = response.json()
        except ValueError:
            raise QueryError(f"Prometheus answered {response.status_code} with a non-JSON body") from None
        if not isinstance(body, dict) or response.status_code != 200 or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise QueryError(f"Prometheus answered {response.status_code}: {error or 'no success status'}")
        data = body.get("data")
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, list):
            raise QueryError("Prometheus answered a non-vector result")
        return result

    async def health(self) -> MetricsHealth:
        """`up` per job with the last scrape's age, cached for the probe cache time."""
        return await self._cache.get("health", self._health)

    async def _health(self) -> MetricsHealth:
        try:
            up, stamps = await asyncio.gather(self.query("up"), self.query("timestamp(up)"))
        except UpstreamError as exc:
            return self._unreachable(exc.reason)
        except QueryError as exc:
            return self._unreachable(str(exc), reachable=True)
        except TimeoutError:
            return self._unreachable(f"timed out after {self._timeout:g} s")
        try:
            targets = _targets(up, stamps, time.time())
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            return self._unreachable("Prometheus answered a vector of an unexpected shape", reachable=True)
        jobs = {target.job for target in targets}
        missing = [job for job in self._expected if job not in jobs]
        down = sorted({target.job for target in targets if not target.up})
        reasons = [f"no Prometheus target for job {job}" for job in missing]
        reasons += [f"job {job}: last scrape failed" for job in down]
        return MetricsHealth(
            status="degraded" if reasons else "ok",
            prometheus_url=self._shown_url,
            prometheus_reachable=True,
            targets=targets,
            missing_jobs=missing,
            down_jobs=down,
            reasons=reasons,
        )

    def _unreachable(self, reason: str, *, reachable: bool = False) -> MetricsHealth:
        return MetricsHealth(
            status="degraded",
            prometheus_url=self._shown_url,
            prometheus_reachable=reachable,
            targets=[],
            missing_jobs=list(self._expected),
            down_jobs=[],
            reasons=[f"Prometheus: {reason}"],
        )


def _targets(up: list[dict[str, Any]], stamps: list[dict[str, Any]], now: float) -> list[ScrapeTarget]:
    scraped_at = {_series_key(item): float(item["value"][1]) for item in stamps}
    return sorted(
        (
            ScrapeTarget(
                job=str(item["metric"].get("job", "")),
                instance=str(item["metric"].get("instance", "")),
                up=item["value"][1] == "1",
                last_scrape_seconds_ago=_age(now, scraped_at.get(_series_key(item))),
            )
            for item in up
        ),
        key=lambda target: (target.job, target.instance),
    )


def _series_key(item: dict[str, Any]) -> tuple[str, str]:
    metric = item.get("metric", {})
    return metric.get("job", ""), metric.get("instance", "")


def _age(now: float, stamp: float | None) -> float | None:
    return None if stamp is None else round(max(0.0, now - stamp), 3)
