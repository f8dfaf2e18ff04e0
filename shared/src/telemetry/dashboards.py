"""Grafana dashboard JSON generated from the query catalog (`telemetry.queries`).

`python -m telemetry.dashboards deploy/grafana/dashboards` writes one `<uid>.json` per dashboard;
`--check` exits 1 when the committed files differ from what the catalog generates. The functions are
pure: catalog in, JSON-ready dicts out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from telemetry.queries import DASHBOARDS, SERVICE_VARIABLE, Dashboard, DatasourceKind, Panel

DATASOURCE_UIDS: dict[DatasourceKind, str] = {"prometheus": "prometheus", "loki": "loki", "tempo": "tempo"}
"""Datasource uids as provisioned in deploy/grafana/provisioning/datasources/datasources.yml."""

GRID_WIDTH = 24
"""Grafana's dashboard grid is 24 columns wide."""
PANEL_SIZE: dict[str, tuple[int, int]] = {
    "stat": (6, 6),
    "gauge": (6, 6),
    "timeseries": (12, 8),
    "table": (24, 8),
    "traces": (24, 8),
    "logs": (24, 10),
}
"""Width and height, in grid units, of each panel kind."""
SCHEMA_VERSION = 39
"""Dashboard JSON schema version the panels are written for."""

JSON = dict[str, Any]


def datasource_ref(kind: DatasourceKind) -> JSON:
    """Reference to a provisioned datasource by its fixed uid."""
    return {"type": kind, "uid": DATASOURCE_UIDS[kind]}


def service_variable() -> JSON:
    """The service selector: every Prometheus `job`, several at once, "All" matching any."""
    query = "label_values(up, job)"
    return {
        "name": SERVICE_VARIABLE,
        "label": "Service",
        "type": "query",
        "datasource": datasource_ref("prometheus"),
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".+",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "options": [],
        "regex": "",
    }


def thresholds(panel: Panel) -> JSON:
    """Absolute colour steps: green from the bottom, then the panel's own steps."""
    steps: list[JSON] = [{"color": "green", "value": None}]
    steps += [{"color": step.color, "value": step.value} for step in panel.thresholds]
    return {"mode": "absolute", "steps": steps}


def field_config(panel: Panel) -> JSON:
    """Unit, range and thresholds of a metrics panel."""
    defaults: JSON = {"thresholds": thresholds(panel)}
    if panel.unit is not None:
        defaults["unit"] = panel.unit
    if panel.min is not None:
        defaults["min"] = panel.min
    if panel.max is not None:
        defaults["max"] = panel.max
    if panel.kind in {"stat", "gauge"} and panel.thresholds:
        defaults["color"] = {"mode": "thresholds"}
    return {"defaults": defaults, "overrides": []}


def target(panel: Panel) -> JSON:
    """The panel's one query, in the shape its datasource's editor writes."""
    ref = datasource_ref(panel.datasource)
    if panel.datasource == "prometheus":
        # Exemplars only draw on graphs; each one links its trace_id to Tempo.
        query: JSON = {"expr": panel.expr, "range": True, "instant": False}
        query["exemplar"] = panel.kind == "timeseries"
        query["legendFormat"] = panel.legend or "__auto"
        return {"refId": "A", "datasource": ref, "editorMode": "code", **query}
    if panel.datasource == "loki":
        loki: JSON = {
            "refId": "A",
            "datasource": ref,
            "editorMode": "code",
            "expr": panel.expr,
            # A table shows one value per series over the whole range ($__range): an instant query.
            "queryType": "instant" if panel.kind == "table" else "range",
        }
        if panel.legend is not None:
            loki["legendFormat"] = panel.legend
        return loki
    return {
        "refId": "A",
        "datasource": ref,
        "queryType": "traceql",
        "query": panel.expr,
        "limit": 20,
        "tableType": "traces",
    }


def panel_options(panel: Panel) -> JSON:
    """Visualisation options per panel kind."""
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if panel.kind == "stat":
        return {"reduceOptions": reduce, "colorMode": "value", "graphMode": "area", "textMode": "auto"}
    if panel.kind == "gauge":
        return {"reduceOptions": reduce, "showThresholdLabels": False, "showThresholdMarkers": True}
    if panel.kind == "timeseries":
        return {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if panel.kind == "logs":
        return {
            "showTime": True,
            "showLabels": False,
            "showCommonLabels": False,
            "wrapLogMessage": True,
            "prettifyLogMessage": False,
            "enableLogDetails": True,
            "dedupStrategy": "none",
            "sortOrder": "Descending",
            # The parsed JSON fields shown beside each line (SPEC §8: level, endpoint, status_code).
            "displayedFields": ["level", "endpoint", "status_code"],
        }
    return {"showHeader": True, "cellHeight": "sm"}


def grafana_type(panel: Panel) -> str:
    """Grafana visualisation for a panel kind.

    A TraceQL search answers with a list of traces, which only the table visualisation lists (each trace
    id opens the trace); the traces visualisation draws one trace and would stay empty.
    """
    return "table" if panel.kind == "traces" else panel.kind


def layout(panels: Sequence[Panel]) -> list[JSON]:
    """Grid positions: left to right in rows of 24 columns, wrapping when a panel does not fit."""
    positions: list[JSON] = []
    x = y = row_height = 0
    for panel in panels:
        width, height = PANEL_SIZE[panel.kind]
        if x + width > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        positions.append({"x": x, "y": y, "w": width, "h": height})
        x += width
        row_height = max(row_height, height)
    return positions


def render_panel(panel: Panel, panel_id: int, grid_pos: JSON) -> JSON:
    """One Grafana panel for a catalog panel."""
    rendered: JSON = {
        "id": panel_id,
        "type": grafana_type(panel),
        "title": panel.title,
        "description": panel.description,
        "datasource": datasource_ref(panel.datasource),
        "gridPos": grid_pos,
        "targets": [target(panel)],
        "options": panel_options(panel),
    }
    if panel.datasource == "prometheus":
        rendered["fieldConfig"] = field_config(panel)
    return rendered


def render_dashboard(board: Dashboard) -> JSON:
    """A complete dashboard, as Grafana's file provisioning loads it."""
    uses_selector = any(f"${SERVICE_VARIABLE}" in panel.expr for panel in board.panels)
    return {
        "id": None,
        "uid": board.uid,
        "title": board.title,
        "tags": list(board.tags),
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "15s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-30m", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [service_variable()] if uses_selector else []},
        "panels": [
            render_panel(panel, panel_id, grid_pos)
            for panel_id, (panel, grid_pos) in enumerate(
                zip(board.panels, layout(board.panels), strict=True), start=1
            )
        ],
    }


def dashboard_files(boards: Sequence[Dashboard] = DASHBOARDS) -> dict[str, str]:
    """File name → JSON text for every dashboard: sorted keys, two-space indent, final newline."""
    return {
        f"{board.uid}.json": json.dumps(render_dashboard(board), indent=2, sort_keys=True) + "\n"
        for board in boards
    }


def stale_files(directory: Path, boards: Sequence[Dashboard] = DASHBOARDS) -> list[str]:
    """Names of dashboard files in `directory` that are missing or differ from the generated ones."""
    return [
        name
        for name, text in dashboard_files(boards).items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]


def write_dashboards(directory: Path, boards: Sequence[Dashboard] = DASHBOARDS) -> list[Path]:
    """Write every dashboard into `directory`; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in dashboard_files(boards).items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the dashboards, or with `--check` report whether the committed ones are current."""
    parser = argparse.ArgumentParser(prog="python -m telemetry.dashboards", description=__doc__)
    parser.add_argument("directory", type=Path, help="where the dashboard JSON lives")
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.directory)
        for name in stale:
            sys.stderr.write(f"{args.directory / name} is not what the query catalog generates\n")
        if stale:
            sys.stderr.write("regenerate with: make dashboards\n")
        return 1 if stale else 0
    for path in write_dashboards(args.directory):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
