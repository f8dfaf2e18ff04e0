"""What every check shares: the stack under test, the failure it raises, polling, components and hints."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

JOBS = ("gateway", "admin", "log-shipper")
READY_PATHS = {"prometheus": "/-/ready", "loki": "/ready", "tempo": "/ready", "grafana": "/api/health"}
START_HINTS = {
    "prometheus": "start it (`make run` starts Debian's prometheus; compose: `docker compose up -d`)"
    " or pass --prometheus",
    "loki": "start Loki (`docker compose up -d loki`) or pass --loki; else --skip loki",
    "tempo": "start Tempo (`docker compose up -d tempo`) or pass --tempo; else --skip tempo",
    "grafana": "start Grafana (`docker compose up -d grafana`) or pass --grafana; else --skip grafana",
}
GATEWAY_SERVICE = "gatewayz-api"


class CheckFailedError(Exception):
    """A check found the stack wrong: the message is the evidence, `hint` the likely cause and fix."""

    def __init__(self, evidence: str, hint: str) -> None:
        super().__init__(evidence)
        self.hint = hint


@dataclass(slots=True)
class Stack:
    """URLs of the stack under test and one HTTP client for all checks."""

    gateway: str
    prometheus: str
    loki: str
    tempo: str
    grafana: str
    wait: float
    grafana_auth: tuple[str, str]
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=5.0))
    _reachable: dict[str, str | None] = field(default_factory=dict)

    def unreachable(self, component: str) -> str | None:
        """Why `component` cannot be reached (cached), or None when it answers at all."""
        if component not in self._reachable:
            base = getattr(self, component)
            try:
                self.client.get(base + READY_PATHS[component])
                self._reachable[component] = None
            except httpx.HTTPError as exc:
                self._reachable[component] = f"{component} unreachable at {base}: {exc}"
        return self._reachable[component]

    def json(self, method: str, target: str, **kwargs: Any) -> Any:  # noqa: ANN401 - JSON documents
        """Call `target` and decode JSON; HTTP errors raise with the status and body."""
        response = self.client.request(method, target, **kwargs)
        response.raise_for_status()
        return response.json()

    def prometheus_query(self, expr: str) -> list[dict[str, Any]]:
        """The instant-vector result of `expr`."""
        data = self.json("GET", f"{self.prometheus}/api/v1/query", params={"query": expr})
        return list(data["data"]["result"])

    def loki_lines(self, query: str, since_seconds: int = 900, limit: int = 200) -> list[tuple[int, str]]:
        """(timestamp ns, line) of `query` over the last `since_seconds`, newest first."""
        now_ns = time.time_ns()
        params = {
            "query": query,
            "start": str(now_ns - since_seconds * 10**9),
            "end": str(now_ns),
            "limit": str(limit),
            "direction": "backward",
        }
        data = self.json("GET", f"{self.loki}/loki/api/v1/query_range", params=params)
        lines = [(int(ts), line) for stream in data["data"]["result"] for ts, line in stream["values"]]
        return sorted(lines, reverse=True)


def poll(check: Callable[[], Any], deadline_seconds: float, interval: float = 1.0) -> Any:  # noqa: ANN401
    """Call `check` until it returns something truthy or the deadline passes; the last value."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
