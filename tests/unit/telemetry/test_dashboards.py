"""Dashboard JSON is generated from the query catalog, panel for panel."""

from __future__ import annotations

import json

from telemetry.dashboards import (
    DATASOURCE_UIDS,
    GRID_WIDTH,
    dashboard_files,
    layout,
    main,
    render_dashboard,
    stale_files,
    write_dashboards,
)
from telemetry.queries import DASHBOARDS, FASTAPI_DASHBOARD, INFERENCE_DASHBOARD


def targets(board):
    return [panel["targets"][0] for panel in render_dashboard(board)["panels"]]


class TestRenderDashboard:
    def test_every_catalog_panel_becomes_one_panel_with_its_query(self):
        """Each catalog panel is rendered once, in order, carrying exactly the catalog's query."""
        for board in DASHBOARDS:
            rendered = render_dashboard(board)
            assert rendered["uid"] == board.uid
            assert rendered["title"] == board.title
            assert [p["title"] for p in rendered["panels"]] == [p.title for p in board.panels]
            queries = [t.get("expr", t.get("query")) for t in targets(board)]
            assert queries == [p.expr for p in board.panels]

    def test_fastapi_dashboard_matches_spec_section_8(self):
        """Panel types, units, thresholds and ranges are those SPEC §8 lists."""
        panels = {p["title"]: p for p in render_dashboard(FASTAPI_DASHBOARD)["panels"]}
        assert render_dashboard(FASTAPI_DASHBOARD)["title"] == "FastAPI Dashboard"
        assert panels["Total Requests"]["type"] == "stat"
        assert panels["Total Requests"]["fieldConfig"]["defaults"]["unit"] == "reqps"
        errors = panels["Errors Per Second"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [(s["color"], s["value"]) for s in errors] == [("green", None), ("yellow", 1), ("red", 5)]
        cpu = panels["CPU Usage"]["fieldConfig"]["defaults"]
        assert panels["CPU Usage"]["type"] == "gauge"
        assert (cpu["min"], cpu["max"], cpu["unit"]) == (0, 100, "percent")
        assert [s["value"] for s in cpu["thresholds"]["steps"]] == [None, 50, 80]
        memory = panels["Memory Usage"]["fieldConfig"]["defaults"]
        assert memory["unit"] == "decmbytes"
        assert [s["value"] for s in memory["thresholds"]["steps"]] == [None, 512, 1024]
        logs = panels["Logger Stream"]
        assert logs["type"] == "logs"
        assert logs["datasource"] == {"type": "loki", "uid": DATASOURCE_UIDS["loki"]}
        assert logs["options"]["displayedFields"] == ["level", "endpoint", "status_code"]

    def test_service_selector_is_a_multi_value_job_variable(self):
        """The FastAPI dashboard's `job` variable lists Prometheus jobs and "All" matches any."""
        (variable,) = render_dashboard(FASTAPI_DASHBOARD)["templating"]["list"]
        assert variable["name"] == "job"
        assert variable["query"]["query"] == "label_values(up, job)"
        assert variable["datasource"] == {"type": "prometheus", "uid": "prometheus"}
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        assert variable["allValue"] == ".+"

    def test_no_selector_where_no_query_uses_it(self):
        """The inference dashboard has no `$job` query, so no dangling variable."""
        assert render_dashboard(INFERENCE_DASHBOARD)["templating"]["list"] == []

    def test_graphs_ask_for_exemplars(self):
        """Prometheus time series request exemplars (the trace_id links); stats and gauges do not."""
        for panel in render_dashboard(FASTAPI_DASHBOARD)["panels"]:
            if panel["datasource"]["type"] == "prometheus":
                assert panel["targets"][0]["exemplar"] is (panel["type"] == "timeseries"), panel["title"]

    def test_trace_search_is_listed_in_a_table(self):
        """A TraceQL search panel uses the Tempo datasource and a table of traces."""
        (panel,) = [
            p for p in render_dashboard(INFERENCE_DASHBOARD)["panels"] if p["datasource"]["uid"] == "tempo"
        ]
        assert panel["type"] == "table"
        assert panel["targets"][0]["queryType"] == "traceql"


class TestLayout:
    def test_panels_never_overlap_or_leave_the_grid(self):
        """Every panel fits in 24 columns and no two share a cell."""
        for board in DASHBOARDS:
            cells = set()
            for pos in layout(board.panels):
                assert pos["x"] + pos["w"] <= GRID_WIDTH
                mine = {
                    (x, y)
                    for x in range(pos["x"], pos["x"] + pos["w"])
                    for y in range(pos["y"], pos["y"] + pos["h"])
                }
                assert not cells & mine
                cells |= mine


class TestFiles:
    def test_generation_is_deterministic_json(self):
        """Two runs give byte-identical, parseable files named by uid."""
        first, second = dashboard_files(), dashboard_files()
        assert first == second
        assert sorted(first) == sorted(f"{board.uid}.json" for board in DASHBOARDS)
        for text in first.values():
            assert json.loads(text)["schemaVersion"] >= 36
            assert text.endswith("}\n")

    def test_check_reports_a_stale_file_and_passes_after_regeneration(self, tmp_path, capsys):
        """`--check` exits 1 naming an edited file, and 0 once the files are regenerated."""
        write_dashboards(tmp_path)
        assert main([str(tmp_path), "--check"]) == 0
        edited = tmp_path / f"{FASTAPI_DASHBOARD.uid}.json"
        edited.write_text(edited.read_text().replace("Total Requests", "Total Reqs"))
        assert stale_files(tmp_path) == [edited.name]
        assert main([str(tmp_path), "--check"]) == 1
        assert edited.name in capsys.readouterr().err
        assert main([str(tmp_path)]) == 0
        assert stale_files(tmp_path) == []
