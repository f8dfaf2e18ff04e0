"""The query catalog carries the SPEC §8 panels with their fixes."""

from __future__ import annotations

from telemetry.queries import (
    FASTAPI_DASHBOARD,
    LOGQL_QUERIES,
    TRACEQL_QUERIES,
    promql_panels,
    resolve_variables,
)


def panel(title: str):
    (found,) = [p for p in FASTAPI_DASHBOARD.panels if p.title == title]
    return found


class TestFastApiDashboard:
    def test_eight_panels_in_spec_order(self):
        """The FastAPI Dashboard has the eight SPEC §8 panels, in order."""
        assert [p.title for p in FASTAPI_DASHBOARD.panels] == [
            "Total Requests",
            "Requests Per Minute",
            "Errors Per Second",
            "Average Response Time",
            "Request Duration P60",
            "CPU Usage",
            "Memory Usage",
            "Logger Stream",
        ]

    def test_fixes(self):
        """Errors use a 1m range, P60 aggregates by le, memory is MB, logs parse JSON."""
        assert resolve_variables(panel("Errors Per Second").expr, ".+") == (
            'sum(rate(fastapi_requests_total{job=~".+", status_code=~"4..|5.."}[1m]))'
        )
        assert "[1s]" not in " ".join(p.expr for p in FASTAPI_DASHBOARD.panels)
        assert panel("Request Duration P60").expr.startswith(
            "histogram_quantile(0.60, sum by (le, method, path)"
        )
        memory = panel("Memory Usage")
        assert memory.expr.endswith("/ 1024 / 1024")
        assert memory.unit == "decmbytes"
        assert [t.value for t in memory.thresholds] == [512, 1024]
        assert panel("Logger Stream").expr == '{service="gatewayz-api"} | json'

    def test_every_promql_panel_has_the_service_selector(self):
        """Each Prometheus panel of the FastAPI dashboard filters on $job."""
        for board, p in promql_panels():
            if board is FASTAPI_DASHBOARD:
                assert "$job" in p.expr, p.title


def test_spec_section_9_queries():
    """The LogQL and TraceQL users run are listed verbatim."""
    assert '{service="gatewayz-api", level="ERROR"}' in LOGQL_QUERIES
    assert '{ resource.service.name = "gatewayz-api" && status = error }' in TRACEQL_QUERIES
