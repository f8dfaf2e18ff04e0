"""Loki's query API: reading the admin's own test lines back with `query_range`."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from admin.polling import Attempt, poll_until
from admin.settings import AdminSettings
from admin.upstream import Upstream, UpstreamError

_LOOKBACK_NS = 5 * 60 * 1_000_000_000
_DECODER = msgspec.json.Decoder()


class LogCheck(msgspec.Struct, frozen=True, kw_only=True):
    """Did the test lines arrive in Loki, and at which levels."""

    found: bool
    """Every expected level was found for the trace id."""
    query: str
    """The LogQL that was run (paste it into Grafana Explore)."""
    lines: int = 0
    levels: list[str] = msgspec.field(default_factory=list)
    attempts: int = 0
    waited_seconds: float = 0.0
    reason: str | None = None


class LokiClient:
    """Runs `query_range` for lines carrying a trace id, polling with a bounded deadline."""

    def __init__(self, upstream: Upstream, settings: AdminSettings) -> None:
        self._upstream = upstream
        self._url = settings.loki_url.rstrip("/") + "/loki/api/v1/query_range"
        self._service = settings.service_name
        self._timeout = settings.probe_timeout_seconds
        self._deadline = settings.verify_timeout_seconds

    def query_for(self, trace_id: str) -> str:
        """LogQL selecting this service's lines that carry `trace_id` (a line filter: cheap, exact)."""
        return f'{{service="{self._service}"}} |= "{trace_id}"'

    async def fetch(self, trace_id: str, levels: frozenset[str], since_ns: int) -> Attempt[LogCheck]:
        """One `query_range`; done when every level in `levels` was found, or Loki refused the query."""
        query = self.query_for(trace_id)
        params = {
            "query": query,
            "start": str(since_ns - _LOOKBACK_NS),
            "end": str(time.time_ns() + 60_000_000_000),
            "limit": "100",
            "direction": "forward",
        }
        try:
            response = await self._upstream.request(
                "GET", self._url, route="/loki/api/v1/query_range", timeout=self._timeout, params=params
            )
        except UpstreamError as exc:
            return Attempt(LogCheck(found=False, query=query, reason=f"Loki: {exc.reason}"), done=False)
        if response.status_code != 200:
            reason = f"Loki answered {response.status_code}: {response.text[:200].strip()}"
            return Attempt(LogCheck(found=False, query=query, reason=reason), done=response.status_code < 500)
        try:
            seen = _levels(response.json())
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            reason = "Loki answered 200 with a body that is not a streams result"
            return Attempt(LogCheck(found=False, query=query, reason=reason), done=True)
        found_levels = sorted(set(seen))
        missing = sorted(levels - set(seen))
        check = LogCheck(
            found=not missing,
            query=query,
            lines=len(seen),
            levels=found_levels,
            reason=f"no {', '.join(missing)} line yet" if missing else None,
        )
        return Attempt(check, done=not missing)

    async def verify(self, trace_id: str, levels: frozenset[str], since_ns: int) -> LogCheck:
        """Poll until lines at every level in `levels` are in Loki or `VERIFY_TIMEOUT_SECONDS` pass."""
        check, attempts, waited = await poll_until(
            lambda: self.fetch(trace_id, levels, since_ns), deadline=self._deadline
        )
        return msgspec.structs.replace(check, attempts=attempts, waited_seconds=waited)


def _levels(body: dict[str, Any]) -> list[str]:
    """The level of every line in a `streams` result: the stream's `level` label, else the JSON field."""
    data = body["data"]
    if data.get("resultType") != "streams":
        raise ValueError("not a streams result")
    levels: list[str] = []
    for stream in data["result"]:
        label = stream.get("stream", {}).get("level")
        for _timestamp, line in stream["values"]:
            levels.append(label or _line_level(line))
    return levels


def _line_level(line: str) -> str:
    try:
        decoded = _DECODER.decode(line)
    except msgspec.DecodeError:
        return "UNKNOWN"
    return str(decoded.get("level", "UNKNOWN")) if isinstance(decoded, dict) else "UNKNOWN"
