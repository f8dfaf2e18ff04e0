"""`make verify`: the SPEC §10 checklist against a running stack (local or compose), one line per item.

    python -m gatewayz_tools.verify [--gateway URL] [--prometheus URL] [--loki URL] [--tempo URL]
                                    [--grafana URL] [--skip loki,tempo,grafana] [--wait 30]

Each item prints ✓ or ✗ with its evidence (counts, ids, ages) and, on ✗, the likely cause and the fix.
Exit status 1 if any item failed; skipped items (`--skip`) print - and do not count.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from gatewayz_tools.localenv import read_dotenv, url
from telemetry.dashboards import datasource_ref
from telemetry.queries import DASHBOARDS, promql_panels, resolve_variables

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


def check_prometheus_scraping(stack: Stack) -> str:
    """Every service's target is up."""
    targets = stack.json("GET", f"{stack.prometheus}/api/v1/targets")["data"]["activeTargets"]
    by_job = {target["labels"]["job"]: target for target in targets}
    missing = [job for job in JOBS if job not in by_job]
    down = {
        job: by_job[job].get("lastError", "")
        for job in JOBS
        if job in by_job and by_job[job]["health"] != "up"
    }
    if missing or down:
        details = [f"{job}: no target" for job in missing] + [
            f"{job}: {error or 'down'}" for job, error in down.items()
        ]
        raise CheckFailedError(
            "; ".join(details),
            "a service is not running or not reachable from Prometheus: start it, and check the targets in "
            "deploy/prometheus/prometheus.yml (compose: service:port; local: 127.0.0.1:port)",
        )
    return ", ".join(f"{job} up" for job in JOBS)


def check_scrape_interval(stack: Stack) -> str:
    """Each target was scraped within two intervals and the interval is 15 s."""
    targets = stack.json("GET", f"{stack.prometheus}/api/v1/targets")["data"]["activeTargets"]
    evidence, stale = [], []
    for target in targets:
        job = target["labels"]["job"]
        if job not in JOBS:
            continue
        interval = target.get("scrapeInterval", "15s")
        age = _age_seconds(target.get("lastScrape", ""))
        evidence.append(f"{job} every {interval}, last {age:.0f}s ago")
        if interval != "15s" or age > 2 * _duration_seconds(interval):
            stale.append(job)
    if stale:
        raise CheckFailedError(
            "; ".join(evidence),
            f"{', '.join(stale)} not scraped every 15 s: check scrape_interval in"
            " deploy/prometheus/prometheus.yml"
            " and that Prometheus is not overloaded",
        )
    return "; ".join(evidence)


def check_loki_ingesting(stack: Stack) -> str:
    """The gateway's JSON lines are in Loki and `| json` parses their fields."""
    query = f'{{service="{GATEWAY_SERVICE}"}} | json'
    data = stack.json(
        "GET",
        f"{stack.loki}/loki/api/v1/query_range",
        params={"query": query, "limit": "50", "start": str(time.time_ns() - 900 * 10**9)},
    )
    streams = data["data"]["result"]
    count = sum(len(stream["values"]) for stream in streams)
    if count == 0:
        raise CheckFailedError(
            f"no lines for {query} in the last 15 minutes",
            "the log-shipper is not pushing: check its /ready and `log_shipper_*` metrics, LOKI_PUSH_URL,"
            " and that it receives the gateway's stdout (SHIPPER_FILES or stdin)",
        )
    parsed = {key for stream in streams for key in stream["stream"]}
    wanted = {"level", "endpoint", "status_code"}
    if not wanted <= parsed:
        raise CheckFailedError(
            f"{count} lines, but `| json` gave only {sorted(parsed)}",
            "lines are not the SPEC §4 JSON: is the shipper sending the original line unchanged?",
        )
    return f"{count} lines in 15 min; `| json` yields {', '.join(sorted(wanted))}"


def check_log_stream_live(stack: Stack) -> str:
    """A request made now appears in Loki within the wait."""
    stack.client.get(f"{stack.gateway}/api/users/1")
    lines = poll(
        lambda: stack.loki_lines(f'{{service="{GATEWAY_SERVICE}"}}', since_seconds=120, limit=1), stack.wait
    )
    if not lines:
        raise CheckFailedError(
            f"no gateway line in the last 2 minutes after {stack.wait:.0f}s",
            "the shipper is behind or stopped: check log_shipper_lag_seconds and its spool",
        )
    age = time.time() - lines[0][0] / 1e9
    if age > 60:
        raise CheckFailedError(f"newest line is {age:.0f}s old", "the shipper is lagging: check its /metrics")
    return f"newest gateway line {age:.1f}s old"


def check_tempo_receiving(stack: Stack) -> str:
    """Tempo's search finds recent gateway traces."""
    query = f'{{ resource.service.name = "{GATEWAY_SERVICE}" }}'
    now = int(time.time())

    def search() -> list[dict[str, Any]]:
        params = {"q": query, "start": str(now - 3600), "end": str(int(time.time())), "limit": "20"}
        return list(stack.json("GET", f"{stack.tempo}/api/search", params=params).get("traces", []))

    traces = poll(search, stack.wait, interval=2.0)
    if not traces:
        raise CheckFailedError(
            f"no traces for {query} in the last hour",
            "the gateway exports nothing: check TEMPO_ENABLED, TEMPO_OTLP_HTTP_ENDPOINT"
            " and OTEL_TRACES_SAMPLER",
        )
    return f"{len(traces)} traces found, newest {traces[0].get('traceID', '?')}"


def _grafana(stack: Stack, path: str, **kwargs: Any) -> Any:  # noqa: ANN401 - JSON documents
    try:
        return stack.json(
            kwargs.pop("method", "GET"), f"{stack.grafana}{path}", auth=stack.grafana_auth, **kwargs
        )
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 401:
            raise CheckFailedError(
                "Grafana refused the credentials",
                "set GRAFANA_USER / GRAFANA_ADMIN_PASSWORD (as in .env) for verify",
            ) from exc
        raise


def check_grafana_datasources(stack: Stack) -> str:
    """Each provisioned datasource answers its health check."""
    evidence, failed = [], []
    for kind in ("prometheus", "loki", "tempo"):
        uid = datasource_ref(kind)["uid"]
        try:
            health = _grafana(stack, f"/api/datasources/uid/{uid}/health")
            status = str(health.get("status", "?"))
        except httpx.HTTPStatusError as exc:
            status = f"HTTP {exc.response.status_code}"
        evidence.append(f"{uid}: {status}")
        if status != "OK":
            failed.append(uid)
    if failed:
        raise CheckFailedError(
            "; ".join(evidence),
            f"{', '.join(failed)} cannot be reached from Grafana:"
            " check the URLs in deploy/grafana/provisioning/datasources",
        )
    return "; ".join(evidence)


def check_dashboards_load(stack: Stack) -> str:
    """Each dashboard loads by uid with all its panels."""
    evidence = []
    for board in DASHBOARDS:
        try:
            loaded = _grafana(stack, f"/api/dashboards/uid/{board.uid}")
        except httpx.HTTPStatusError as exc:
            raise CheckFailedError(
                f"{board.title}: HTTP {exc.response.status_code}",
                "the dashboards provider did not load it: check deploy/grafana/provisioning/dashboards"
                " and that"
                " deploy/grafana/dashboards is mounted",
            ) from exc
        panels = len(loaded["dashboard"].get("panels", []))
        if panels != len(board.panels):
            raise CheckFailedError(
                f"{board.title}: {panels} panels, expected {len(board.panels)}",
                "the provisioned JSON is stale: run `make dashboards` and restart Grafana",
            )
        evidence.append(f"{board.title} ({panels} panels)")
    return ", ".join(evidence)


def check_panels_have_data(stack: Stack) -> str:
    """Every PromQL panel returns at least one series (asked of Prometheus directly)."""
    empty = []
    panels = promql_panels()
    for board, panel in panels:
        if not stack.prometheus_query(resolve_variables(panel.expr)):
            empty.append(f"{board.title} / {panel.title}")
    if empty:
        raise CheckFailedError(
            f"{len(panels) - len(empty)}/{len(panels)} panels have data; empty: {'; '.join(empty)}",
            "no traffic of that kind yet: run `make traffic`, wait a minute"
            " (rate() needs two scrapes), retry",
        )
    return f"{len(panels)}/{len(panels)} PromQL panels return series"


def check_panels_via_grafana(stack: Stack) -> str:
    """Every panel of every dashboard returns data through Grafana's /api/ds/query."""
    empty = []
    total = 0
    for board in DASHBOARDS:
        for panel in board.panels:
            if panel.datasource == "tempo":
                continue
            total += 1
            query: dict[str, Any] = {"refId": "A", "datasource": datasource_ref(panel.datasource)}
            query["expr"] = resolve_variables(panel.expr)
            if panel.datasource == "loki":
                query["queryType"] = "range"
            body = {"queries": [query], "from": "now-15m", "to": "now"}
            frames = _grafana(stack, "/api/ds/query", method="POST", json=body)["results"]["A"].get(
                "frames", []
            )
            if not any(frame.get("data", {}).get("values") for frame in frames):
                empty.append(f"{board.title} / {panel.title}")
    if empty:
        raise CheckFailedError(
            f"{total - len(empty)}/{total} panels have data via Grafana; empty: {'; '.join(empty)}",
            "run `make traffic`, wait a minute and retry;"
            " if Prometheus has the data, check the datasource uids",
        )
    return f"{total}/{total} Prometheus and Loki panels return data via Grafana"


def check_trace_log_round_trip(stack: Stack) -> str:
    """A traced request's log line names its trace; the trace opens in Tempo; its logs come back by id."""
    trace_id = secrets.token_hex(16)
    parent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    stack.client.get(f"{stack.gateway}/api/users/1", headers={"traceparent": parent})
    started = time.monotonic()
    query = f'{{service="{GATEWAY_SERVICE}"}} | json | trace_id="{trace_id}"'
    lines = poll(lambda: stack.loki_lines(query, since_seconds=300), stack.wait)
    if not lines:
        raise CheckFailedError(
            f"no log line with trace_id {trace_id} after {stack.wait:.0f}s",
            "logs lack trace ids or are not shipped: check the gateway's stdout JSON and the shipper",
        )
    log_seconds = time.monotonic() - started

    def fetch_trace() -> dict[str, Any] | None:
        response = stack.client.get(f"{stack.tempo}/api/traces/{trace_id}")
        return response.json() if response.status_code == 200 else None

    trace = poll(fetch_trace, stack.wait, interval=2.0)
    if not trace:
        raise CheckFailedError(
            f"log line found after {log_seconds:.1f}s, but Tempo has no trace {trace_id}",
            "spans are not exported: check TEMPO_ENABLED and the OTLP endpoint; the sampler must keep"
            " sampled parents (parentbased_*)",
        )
    spans = sum(
        len(scope.get("spans", []))
        for batch in trace.get("batches", trace.get("resourceSpans", []))
        for scope in batch.get("scopeSpans", batch.get("instrumentationLibrarySpans", []))
    )
    return f"trace {trace_id}: log line in Loki after {log_seconds:.1f}s, trace in Tempo with {spans} span(s)"


CHECKS: tuple[tuple[tuple[str, ...], str, Callable[[Stack], str]], ...] = (
    (("prometheus",), "Prometheus scraping every service", check_prometheus_scraping),
    (("prometheus",), "Metrics update every 15 s", check_scrape_interval),
    (("prometheus",), "Every dashboard PromQL panel has data", check_panels_have_data),
    (("loki",), "Loki ingesting structured logs", check_loki_ingesting),
    (("loki",), "The log stream is live", check_log_stream_live),
    (("tempo",), "Tempo receiving traces", check_tempo_receiving),
    (("grafana",), "Grafana datasources connected", check_grafana_datasources),
    (("grafana",), "Dashboards load", check_dashboards_load),
    (("grafana",), "Every panel has data via Grafana", check_panels_via_grafana),
    (
        ("loki", "tempo"),
        "A log line's trace id opens its trace, and its logs come back",
        check_trace_log_round_trip,
    ),
)
"""(components it needs, SPEC §10 item, check)."""


def run(stack: Stack, skip: set[str], out: Callable[[str], None]) -> int:
    """Run every check not skipped; print one line each (and a hint on ✗); the number failed."""
    failed = 0
    for needs, title, check in CHECKS:
        if skipped := skip.intersection(needs):
            out(f"- {title}: skipped (--skip {','.join(sorted(skipped))})")
            continue
        down = [(name, reason) for name in needs if (reason := stack.unreachable(name))]
        if down:
            failed += 1
            name, reason = down[0]
            out(f"✗ {title}: {reason}\n    fix: {START_HINTS[name]}")
            continue
        try:
            out(f"✓ {title}: {check(stack)}")
        except CheckFailedError as exc:
            failed += 1
            out(f"✗ {title}: {exc}\n    fix: {exc.hint}")
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            failed += 1
            urls = " and ".join(f"--{name}" for name in needs)
            out(f"✗ {title}: unexpected answer ({type(exc).__name__}: {exc})\n    fix: check {urls}")
    return failed


_RFC3339 = re.compile(r"^(?P<base>[^.]+?)(?:\.(?P<fraction>\d+))?(?P<zone>Z|[+-]\d\d:\d\d)$")


def _age_seconds(timestamp: str) -> float:
    """Seconds since an RFC 3339 timestamp with any number of fractional digits (Prometheus writes 9)."""
    match = _RFC3339.match(timestamp)
    if match is None:
        return float("inf")
    fraction = (match["fraction"] or "0")[:6].ljust(6, "0")
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    moment = datetime.fromisoformat(f"{match['base']}.{fraction}{zone}")
    return max(0.0, time.time() - moment.timestamp())


def _duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run the checklist, exit 1 if any item failed."""
    parser = argparse.ArgumentParser(description="Verify a running Gatewayz stack (SPEC §10).")
    for name in ("gateway", "prometheus", "loki", "tempo", "grafana"):
        parser.add_argument(f"--{name}", default=url(name), help=f"base URL ({name.upper()}_URL)")
    parser.add_argument("--skip", default="", help="components to skip: loki,tempo,grafana")
    parser.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for logs and traces to arrive"
    )
    args = parser.parse_args(argv)
    dotenv = read_dotenv()
    password = os.environ.get("GRAFANA_ADMIN_PASSWORD") or dotenv.get("GRAFANA_ADMIN_PASSWORD", "admin")
    stack = Stack(
        gateway=args.gateway.rstrip("/"),
        prometheus=args.prometheus.rstrip("/"),
        loki=args.loki.rstrip("/"),
        tempo=args.tempo.rstrip("/"),
        grafana=args.grafana.rstrip("/"),
        wait=args.wait,
        grafana_auth=(os.environ.get("GRAFANA_USER", "admin"), password),
    )
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    failed = run(stack, skip, lambda line: print(line, flush=True))  # noqa: T201 - a CLI's output
    skipped = sum(1 for needs, _, _ in CHECKS if skip.intersection(needs))
    print(f"\n{len(CHECKS) - failed - skipped} passed, {failed} failed, {skipped} skipped")  # noqa: T201
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
