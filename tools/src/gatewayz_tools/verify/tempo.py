"""Tempo's item: its search finds recent gateway traces."""

from __future__ import annotations

import time
from typing import Any

from gatewayz_tools.verify.stack import GATEWAY_SERVICE, CheckFailedError, Stack, poll


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
