"""Grafana's items, asked with its admin login: datasources healthy, dashboards load, panels have data."""

from __future__ import annotations

from typing import Any

import httpx

from gatewayz_tools.verify.stack import CheckFailedError, Stack
from telemetry.dashboards import datasource_ref
from telemetry.queries import DASHBOARDS, resolve_variables


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
