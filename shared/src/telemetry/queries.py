"""The one query catalog: every dashboard panel's PromQL/LogQL and the queries users run (SPEC §8, §9).

`deploy/grafana/dashboards/*.json` is generated from this module, and the admin service serves it at
`/api/metrics/grafana-queries`, so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from telemetry.pipeline import (
    DISCARD_SOURCES,
    LOG_FORWARDERS,
    LOG_SHIPPER,
    LOKI,
    SPAN_EXPORTERS,
    TEMPO,
    WINDOW,
    DiscardSource,
)

PanelKind = Literal["stat", "timeseries", "gauge", "logs", "traces", "table"]
DatasourceKind = Literal["prometheus", "loki", "tempo"]

SERVICE_VARIABLE = "job"
"""Dashboard variable selecting services: Prometheus' `job` label is the service name."""
SERVICE_FILTER = f'job=~"${SERVICE_VARIABLE}"'
"""Label matcher every PromQL panel carries so the service selector applies."""


@dataclass(frozen=True, slots=True)
class Threshold:
    """A colour step: from `value` upwards the panel turns `color`."""

    value: float
    color: str


@dataclass(frozen=True, slots=True)
class Panel:
    """One dashboard panel and the single query it shows."""

    title: str
    """Panel title, as users see it."""
    kind: PanelKind
    """Grafana panel type."""
    datasource: DatasourceKind
    """Which datasource answers `expr`."""
    expr: str
    """The query, with `$job` where the service selector applies."""
    unit: str | None = None
    """Grafana unit id (`reqps`, `s`, `percent`, `decmbytes`, …)."""
    legend: str | None = None
    """Legend format, e.g. `{{method}} {{path}}`."""
    thresholds: tuple[Threshold, ...] = ()
    """Colour steps above the base green."""
    min: float | None = None
    """Axis or gauge minimum."""
    max: float | None = None
    """Axis or gauge maximum."""
    description: str = ""
    """What the panel tells an operator."""


@dataclass(frozen=True, slots=True)
class Dashboard:
    """A provisioned dashboard: a fixed uid, a title and its panels in order."""

    uid: str
    title: str
    panels: tuple[Panel, ...]
    tags: tuple[str, ...] = field(default=("gatewayz",))


_WARN_CRIT_ERRORS = (Threshold(1, "yellow"), Threshold(5, "red"))

FASTAPI_DASHBOARD = Dashboard(
    uid="gatewayz-fastapi",
    title="FastAPI Dashboard",
    panels=(
        Panel(
            title="Total Requests",
            kind="stat",
            datasource="prometheus",
            expr=f"sum(rate(fastapi_requests_total{{{SERVICE_FILTER}}}[5m]))",
            unit="reqps",
            description="Requests per second over 5 minutes, every route and status.",
        ),
        Panel(
            title="Requests Per Minute",
            kind="timeseries",
            datasource="prometheus",
            expr=f"rate(fastapi_requests_total{{{SERVICE_FILTER}}}[1m]) * 60",
            unit="reqpm",
            legend="{{method}} {{path}}",
            description="Requests per minute by method and route template.",
        ),
        Panel(
            title="Errors Per Second",
            kind="stat",
            datasource="prometheus",
            # fix: a [1s] range over a 15 s scrape holds no two samples and returns nothing.
            expr=f'sum(rate(fastapi_requests_total{{{SERVICE_FILTER}, status_code=~"4..|5.."}}[1m]))',
            unit="reqps",
            thresholds=_WARN_CRIT_ERRORS,
            description="4xx and 5xx responses per second over one minute.",
        ),
        Panel(
            title="Average Response Time",
            kind="timeseries",
            datasource="prometheus",
            expr=(
                f"rate(fastapi_requests_duration_seconds_sum{{{SERVICE_FILTER}}}[5m])"
                f" / rate(fastapi_requests_duration_seconds_count{{{SERVICE_FILTER}}}[5m])"
            ),
            unit="s",
            legend="{{method}} {{path}}",
            description="Mean request duration by route over 5 minutes.",
        ),
        Panel(
            title="Request Duration P60",
            kind="timeseries",
            datasource="prometheus",
            # fix: aggregate buckets by le (and the labels kept) before histogram_quantile.
            expr=(
                "histogram_quantile(0.60, sum by (le, method, path) "
                f"(rate(fastapi_requests_duration_seconds_bucket{{{SERVICE_FILTER}}}[5m])))"
            ),
            unit="s",
            legend="{{method}} {{path}}",
            description="60th percentile request duration by route.",
        ),
        Panel(
            title="CPU Usage",
            kind="gauge",
            datasource="prometheus",
            expr=f"rate(process_cpu_seconds_total{{{SERVICE_FILTER}}}[5m]) * 100",
            unit="percent",
            legend="{{job}}",
            thresholds=(Threshold(50, "yellow"), Threshold(80, "red")),
            min=0,
            max=100,
            description="Process CPU, percent of one core.",
        ),
        Panel(
            title="Memory Usage",
            kind="gauge",
            datasource="prometheus",
            # fix: the unit matches the expression: bytes / 1024² is MiB, shown as megabytes.
            expr=f"process_resident_memory_bytes{{{SERVICE_FILTER}}} / 1024 / 1024",
            unit="decmbytes",
            legend="{{job}}",
            thresholds=(Threshold(512, "yellow"), Threshold(1024, "red")),
            min=0,
            max=2048,
            description="Resident memory in MB.",
        ),
        Panel(
            title="Logger Stream",
            kind="logs",
            datasource="loki",
            # fix: select a label Loki has; `| json` exposes level, endpoint and status_code.
            expr='{service="gatewayz-api"} | json',
            description="The gateway's JSON log lines; level, endpoint and status_code are parsed fields.",
        ),
    ),
)

INFERENCE_DASHBOARD = Dashboard(
    uid="gatewayz-inference",
    title="Gateway Inference",
    panels=(
        Panel(
            title="Inference Requests",
            kind="timeseries",
            datasource="prometheus",
            expr="sum by (provider, model, status) (rate(model_inference_requests_total[5m]))",
            unit="reqps",
            legend="{{provider}}/{{model}} {{status}}",
            description="Inference requests per second by provider, model and outcome.",
        ),
        Panel(
            title="Inference Error Ratio",
            kind="stat",
            datasource="prometheus",
            expr=(
                'sum(rate(model_inference_requests_total{status!="success"}[5m]))'
                " / sum(rate(model_inference_requests_total[5m]))"
            ),
            unit="percentunit",
            thresholds=(Threshold(0.01, "yellow"), Threshold(0.05, "red")),
            min=0,
            max=1,
            description="Share of inference requests that did not succeed.",
        ),
        Panel(
            title="Inference Latency P95",
            kind="timeseries",
            datasource="prometheus",
            expr=(
                "histogram_quantile(0.95, sum by (le, provider, model) "
                "(rate(model_inference_duration_seconds_bucket[5m])))"
            ),
            unit="s",
            legend="{{provider}}/{{model}}",
            description="95th percentile provider call duration.",
        ),
        Panel(
            title="Tokens Per Second",
            kind="timeseries",
            datasource="prometheus",
            expr="sum by (provider, model, token_type) (rate(tokens_used_total[5m]))",
            legend="{{model}} {{token_type}}",
            description="Prompt and completion tokens per second.",
        ),
        Panel(
            title="Credits Per Second",
            kind="timeseries",
            datasource="prometheus",
            expr="sum by (provider, model) (rate(credits_used_total[5m]))",
            legend="{{provider}}/{{model}}",
            description="Credits charged per second.",
        ),
        Panel(
            title="Provider Availability",
            kind="stat",
            datasource="prometheus",
            expr="provider_availability",
            legend="{{provider}}",
            min=0,
            max=1,
            description="1 when the provider answered within the rolling window, 0 when it did not.",
        ),
        Panel(
            title="Provider Error Rate",
            kind="timeseries",
            datasource="prometheus",
            expr="provider_error_rate",
            unit="percentunit",
            legend="{{provider}}",
            min=0,
            max=1,
            description="Share of failed provider calls over the rolling window.",
        ),
        Panel(
            title="Provider Response Time",
            kind="timeseries",
            datasource="prometheus",
            expr="provider_response_time_seconds",
            unit="s",
            legend="{{provider}}",
            description="Rolling mean provider response time.",
        ),
        Panel(
            title="Cache Hit Ratio",
            kind="stat",
            datasource="prometheus",
            expr=(
                "sum(rate(cache_hits_total[5m]))"
                " / (sum(rate(cache_hits_total[5m])) + sum(rate(cache_misses_total[5m])))"
            ),
            unit="percentunit",
            min=0,
            max=1,
            description="Share of cacheable completions served from the cache.",
        ),
        Panel(
            title="Cache Size",
            kind="timeseries",
            datasource="prometheus",
            expr="cache_size_bytes",
            unit="bytes",
            legend="{{cache_name}}",
            description="Bytes held by each in-process cache.",
        ),
        Panel(
            title="Inference Errors",
            kind="logs",
            datasource="loki",
            expr='{service="gatewayz-api", level="ERROR"} | json',
            description="The gateway's ERROR lines.",
        ),
        Panel(
            title="Slow Inference Traces",
            kind="traces",
            datasource="tempo",
            expr='{ resource.service.name = "gatewayz-api" && span.http.route = "/v1/chat/completions" }',
            description="Chat completion traces; open one to jump to its logs.",
        ),
    ),
)


def _stages(*stages: tuple[str, str]) -> str:
    """One query whose series are named pipeline stages (legend `{{stage}}`); absent ones are left out."""
    return "\n or ".join(f'label_replace({expr}, "stage", "{name}", "", "")' for name, expr in stages)


def _per_second(counter: str) -> str:
    return f"sum(rate({counter}[{WINDOW}]))"


def _stored(received: str, source: DiscardSource) -> str:
    return f"{_per_second(received)} - ({source.rate} or vector(0))"


def _rejected_samples() -> str:
    """Samples Prometheus refused from scrapes, per second.

    One rate per counter: rate() over several names at once yields one label set per target twice, an
    error in Prometheus 2.
    """
    counters = (
        "sample_out_of_order",
        "sample_duplicate_timestamp",
        "sample_out_of_bounds",
        "exceeded_sample_limit",
    )
    return " + ".join(
        f"(sum(rate(prometheus_target_scrapes_{name}_total[{WINDOW}])) or vector(0))" for name in counters
    )


def _all_discards() -> str:
    return " + ".join(
        f"(sum(increase({source.selector}[{WINDOW}])) or vector(0))" for source in DISCARD_SOURCES
    )


PIPELINE_DASHBOARD = Dashboard(
    uid="gatewayz-pipeline",
    title="Pipeline health",
    panels=(
        Panel(
            title="Discarded In The Pipeline",
            kind="stat",
            datasource="prometheus",
            expr=_all_discards(),
            thresholds=(Threshold(1, "red"),),
            description="Spans and log lines discarded over 5 minutes anywhere: Tempo, Loki, span exporters,"
            " the log-shipper and the log forwarders. Anything above 0 is data that will never be stored.",
        ),
        Panel(
            title="Targets Down",
            kind="stat",
            datasource="prometheus",
            expr="count(up == 0) or vector(0)",
            thresholds=(Threshold(1, "red"),),
            description="Scrape targets Prometheus cannot reach (services, Loki, Tempo, itself).",
        ),
        Panel(
            title="Logs: Read, Shipped, Stored, Dropped",
            kind="timeseries",
            datasource="prometheus",
            expr=_stages(
                ("read by shippers", _per_second("log_shipper_lines_read_total")),
                ("acknowledged by Loki", _per_second("log_shipper_lines_shipped_total")),
                ("received by Loki", _per_second("loki_distributor_lines_received_total")),
                ("stored by Loki", _stored("loki_distributor_lines_received_total", LOKI)),
                ("discarded by Loki", LOKI.rate),
                ("dropped by the shipper", LOG_SHIPPER.rate),
                ("dropped by forwarders", LOG_FORWARDERS.rate),
            ),
            unit="ops",
            legend="{{stage}}",
            description="Log lines per second at each stage; read = acknowledged = stored when none is lost.",
        ),
        Panel(
            title="Traces: Exported, Stored, Dropped",
            kind="timeseries",
            datasource="prometheus",
            expr=_stages(
                ("exported by services", _per_second("otel_spans_exported_total")),
                ("received by Tempo", _per_second("tempo_distributor_spans_received_total")),
                ("stored by Tempo", _stored("tempo_distributor_spans_received_total", TEMPO)),
                ("discarded by Tempo", TEMPO.rate),
                ("dropped by exporters", SPAN_EXPORTERS.rate),
            ),
            unit="ops",
            legend="{{stage}}",
            description="Spans per second at each stage. Tempo answers exporters with success as it discards"
            " (live_traces_exceeded, rate_limited): only its own counter shows it.",
        ),
        Panel(
            title="Metrics: Stored, Rejected",
            kind="timeseries",
            datasource="prometheus",
            expr=_stages(
                ("stored by Prometheus", _per_second("prometheus_tsdb_head_samples_appended_total")),
                ("rejected by Prometheus", _rejected_samples()),
            ),
            unit="ops",
            legend="{{stage}}",
            description="Samples per second Prometheus appended, and those it refused from scrapes.",
        ),
        Panel(
            title="Discards By Source And Reason",
            kind="timeseries",
            datasource="prometheus",
            expr="\n or ".join(
                f"label_replace(sum by (reason) (rate({source.selector}[{WINDOW}])),"
                f' "source", "{source.name}", "", "")'
                for source in DISCARD_SOURCES
            )
            + '\n or label_replace(vector(0), "source", "nothing discarded", "", "")',
            unit="ops",
            legend="{{source}} {{reason}}",
            description="What is discarded, where and why (README, Sizing: what to raise for each reason).",
        ),
    ),
    tags=("gatewayz", "pipeline"),
)

DASHBOARDS = (FASTAPI_DASHBOARD, INFERENCE_DASHBOARD, PIPELINE_DASHBOARD)

LOGQL_QUERIES = (
    '{service="gatewayz-api"}',
    '{service="gatewayz-api", level="ERROR"}',
    '{service="gatewayz-api"} | json | duration_ms > 1000',
    '{service="gatewayz-api"} | json | endpoint="/v1/chat/completions"',
    '{service="gatewayz-api"} | json | trace_id="<id>"',
)
"""SPEC §9 LogQL; `<id>` is replaced by a real trace id."""

TRACEQL_QUERIES = (
    '{ resource.service.name = "gatewayz-api" }',
    '{ resource.service.name = "gatewayz-api" && duration > 1s }',
    '{ resource.service.name = "gatewayz-api" && status = error }',
    '{ resource.service.name = "gatewayz-api" && span.http.route = "/v1/chat/completions" }',
)
"""SPEC §9 TraceQL."""


def promql_panels() -> list[tuple[Dashboard, Panel]]:
    """Every Prometheus panel of every dashboard, with its dashboard."""
    return [
        (board, panel) for board in DASHBOARDS for panel in board.panels if panel.datasource == "prometheus"
    ]


def resolve_variables(expr: str, job: str = ".+") -> str:
    """`expr` with the service selector set to `job` (a regex), as Grafana would run it."""
    return expr.replace(f"${SERVICE_VARIABLE}", job)
