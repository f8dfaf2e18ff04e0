"""The checklist in SPEC §10's order, one line per item; `python -m gatewayz_tools.verify` parses flags."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import httpx

from gatewayz_tools.localenv import read_dotenv, url
from gatewayz_tools.verify.grafana import (
    check_dashboards_load,
    check_grafana_datasources,
    check_panels_via_grafana,
)
from gatewayz_tools.verify.loki import check_log_stream_live, check_loki_ingesting
from gatewayz_tools.verify.prometheus import (
    check_nothing_discarded,
    check_panels_have_data,
    check_prometheus_scraping,
    check_scrape_interval,
)
from gatewayz_tools.verify.round_trip import check_trace_log_round_trip
from gatewayz_tools.verify.stack import START_HINTS, CheckFailedError, Stack
from gatewayz_tools.verify.tempo import check_tempo_receiving

CHECKS: tuple[tuple[tuple[str, ...], str, Callable[[Stack], str]], ...] = (
    (("prometheus",), "Prometheus scraping every service", check_prometheus_scraping),
    (("prometheus",), "Metrics update every 15 s", check_scrape_interval),
    (("prometheus",), "Every dashboard PromQL panel has data", check_panels_have_data),
    (("prometheus",), "Nothing discarded in the pipeline", check_nothing_discarded),
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
"""(components it needs, SPEC §10 item, check); the discard check is ours, beside §10's."""


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


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run the checklist, exit 1 if any item failed."""
    parser = argparse.ArgumentParser(
        prog="python -m gatewayz_tools.verify",  # as `make verify` runs it (not `__main__.py`)
        description="Verify a running Gatewayz stack (SPEC §10).",
    )
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
