"""Readiness probes of the stack's parts: concurrent, each bounded in time, results cached briefly."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import msgspec

from admin.cache import TtlCache
from admin.settings import AdminSettings
from admin.upstream import Upstream, UpstreamError, public_url

ProbeStatus = Literal["ok", "down", "disabled"]


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """Something the admin service checks: a name and the URL that answers 200 when it is ready."""

    name: str
    """What is probed: `gateway`, `log-shipper`, `prometheus`, `loki`, `tempo`."""
    url: str
    """Its readiness URL."""
    route: str
    """The readiness path, for span names."""
    enabled: bool = True
    """False when configuration says the part is not used; it is then reported, not probed."""


class ProbeResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one probe."""

    name: str
    """What was probed."""
    url: str
    """The URL asked."""
    status: ProbeStatus
    """`ok` (answered 200), `down` (anything else), `disabled` (not probed)."""
    http_status: int | None = None
    """The status code it answered, when it answered."""
    latency_ms: float | None = None
    """How long the probe took."""
    reason: str | None = None
    """Why it is down."""


def targets(settings: AdminSettings) -> tuple[Target, ...]:
    """The five parts SPEC §6 names, in a fixed order."""
    return (
        Target(name="gateway", url=_join(settings.gateway_url, "/ready"), route="/ready"),
        Target(name="log-shipper", url=_join(settings.log_shipper_url, "/ready"), route="/ready"),
        Target(name="prometheus", url=_join(settings.prometheus_url, "/-/ready"), route="/-/ready"),
        Target(
            name="loki", url=_join(settings.loki_url, "/ready"), route="/ready", enabled=settings.loki_enabled
        ),
        Target(
            name="tempo",
            url=_join(settings.tempo_url, "/ready"),
            route="/ready",
            enabled=settings.tempo_enabled,
        ),
    )


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + path


class Prober:
    """Probes targets concurrently; each result is reused for `cache_seconds` across all callers."""

    def __init__(self, upstream: Upstream, settings: AdminSettings) -> None:
        self._upstream = upstream
        self._timeout = settings.probe_timeout_seconds
        self._targets = {target.name: target for target in targets(settings)}
        self._cache: TtlCache[ProbeResult] = TtlCache(settings.probe_cache_seconds)

    async def check_all(self) -> list[ProbeResult]:
        """Every target's result, probed concurrently (so the whole check takes one timeout at most)."""
        return list(await asyncio.gather(*(self.check(name) for name in self._targets)))

    async def check(self, name: str) -> ProbeResult:
        """One target's result, from the cache when fresh."""
        target = self._targets[name]
        if not target.enabled:
            return ProbeResult(
                name=target.name, url=public_url(target.url), status="disabled", reason="disabled by config"
            )
        return await self._cache.get(name, lambda: self._probe(target))

    async def _probe(self, target: Target) -> ProbeResult:
        start = time.perf_counter()
        try:
            # A hard deadline on top of httpx's per-phase timeouts: the whole probe, DNS included.
            async with asyncio.timeout(self._timeout):
                response = await self._upstream.request(
                    "GET", target.url, route=target.route, timeout=self._timeout
                )
        except UpstreamError as exc:
            return self._result(target, start, reason=exc.reason)
        except TimeoutError:
            return self._result(target, start, reason=f"timed out after {self._timeout:g} s")
        if response.status_code != 200:
            snippet = response.text[:200].strip()
            reason = f"answered {response.status_code}" + (f": {snippet}" if snippet else "")
            return self._result(target, start, http_status=response.status_code, reason=reason)
        return self._result(target, start, http_status=200)

    @staticmethod
    def _result(
        target: Target, start: float, *, http_status: int | None = None, reason: str | None = None
    ) -> ProbeResult:
        return ProbeResult(
            name=target.name,
            url=public_url(target.url),
            status="ok" if reason is None else "down",
            http_status=http_status,
            latency_ms=round((time.perf_counter() - start) * 1000, 3),
            reason=reason,
        )


def overall(results: list[ProbeResult]) -> Literal["ok", "degraded"]:
    """`ok` when nothing enabled is down."""
    return "degraded" if any(result.status == "down" for result in results) else "ok"
