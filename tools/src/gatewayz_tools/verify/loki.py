"""Loki's items: the gateway's structured lines are ingested, and the stream is live."""

from __future__ import annotations

import time

from gatewayz_tools.verify.stack import GATEWAY_SERVICE, CheckFailedError, Stack, poll


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
