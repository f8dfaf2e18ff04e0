"""Panels whose metric the gateway of this branch may not record yet, and when an empty one is allowed.

SPEC §11's streaming histograms have their panels and alert in the catalog (issue 16), while recording them
belongs to the streaming relay's work. Until the gateway exposes a family, a panel on it can have no data; the
"every panel has data" tests allow exactly that and nothing more: once the gateway's /metrics has the family,
its panels must have data like every other (so the allowance ends by itself when the recording lands).
"""

from __future__ import annotations

from collections.abc import Iterable

import httpx

AWAITING_RECORDING = frozenset(
    {"model_inference_time_to_first_token_seconds", "model_inference_time_per_output_token_seconds"}
)


def exposed_families(gateway_url: str) -> set[str]:
    """The metric family names (`# TYPE` lines) of the gateway's /metrics."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def unrecorded(expr: str, exposed: set[str]) -> bool:
    """`expr` reads a family still awaiting its recording, which the gateway does not expose."""
    return any(name in expr and name not in exposed for name in AWAITING_RECORDING)


def allowed_empty(titles_and_exprs: Iterable[tuple[str, str]], gateway_url: str) -> set[str]:
    """Of the (title, expr) panels given, those that may be empty now."""
    exposed = exposed_families(gateway_url)
    return {title for title, expr in titles_and_exprs if unrecorded(expr, exposed)}
