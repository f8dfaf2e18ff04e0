"""Prometheus' items: every service scraped, every 15 s, and every dashboard PromQL panel has data."""

from __future__ import annotations

import re
import time
from datetime import datetime

from gatewayz_tools.verify.stack import JOBS, CheckFailedError, Stack
from telemetry.pipeline import DISCARD_SOURCES, WINDOW
from telemetry.queries import promql_panels, resolve_variables


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


def check_nothing_discarded(stack: Stack) -> str:
    """No spans or lines discarded in the last window by Tempo, Loki, the exporters, shipper or forwarders."""
    found = []
    fixes = []
    for source in DISCARD_SOURCES:
        for item in stack.prometheus_query(source.increase):
            reason = item["metric"].get("reason", "")
            job = item["metric"].get("job")
            where = f"{source.name} ({job})" if job else source.name
            unit = "spans" if source.signal == "traces" else "lines"
            found.append(f"{where}: {float(item['value'][1]):.0f} {unit} ({reason})")
            fixes.append(f"{where} {reason}: {source.fix(reason)}")
    if found:
        raise CheckFailedError(
            f"discarded in the last {WINDOW}: " + "; ".join(found), "\n         ".join(fixes)
        )
    scraped = {item["metric"].get("job") for item in stack.prometheus_query('up{job=~"loki|tempo"} == 1')}
    unseen = [name for name in ("loki", "tempo") if name not in scraped]
    note = f"; {', '.join(unseen)} not scraped, so its own discards are not seen" if unseen else ""
    return f"nothing discarded in the last {WINDOW}{note}"


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
