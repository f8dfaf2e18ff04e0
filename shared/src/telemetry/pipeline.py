"""Where each signal can be discarded on its way to storage, as PromQL, with the fix for each reason.

One list serves the alerts' expressions (checked against `deploy/prometheus/alerts.yml`), admin's
`/api/instrumentation/health`, `make verify` and the "Pipeline health" dashboard, so all four agree on
what counts as a discard. Tempo answers exporters with success while it drops spans, and Loki's 429s are
retried by the shipper, so the backends' own counters are the only place some of these show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Signal = Literal["logs", "traces"]

WINDOW = "5m"
"""How far back a discard still counts (alerts, health and verify alike)."""


@dataclass(frozen=True, slots=True)
class DiscardSource:
    """One counter of things that will never be stored, and what to do about each of its reasons."""

    name: str
    """Where it happens, as an operator names it."""
    signal: Signal
    """Which signal loses data."""
    selector: str
    """The counter, with the matchers that leave out what is not a loss."""
    by: tuple[str, ...]
    """Labels an alert and the health report keep (reason first)."""
    fixes: dict[str, str] = field(default_factory=dict)
    """Reason → the fix; the `""` entry for reasons not listed."""

    @property
    def increase(self) -> str:
        """Discards over the window, per `by` labels, only where there were some."""
        return f"sum by ({', '.join(self.by)}) (increase({self.selector}[{WINDOW}])) > 0"

    @property
    def rate(self) -> str:
        """Discards per second, all reasons together (dashboards)."""
        return f"sum(rate({self.selector}[{WINDOW}]))"

    def fix(self, reason: str) -> str:
        """The fix for `reason`."""
        return self.fixes.get(reason, self.fixes[""])


TEMPO = DiscardSource(
    name="Tempo",
    signal="traces",
    selector="tempo_discarded_spans_total",
    by=("reason",),
    fixes={
        "live_traces_exceeded": "raise overrides.defaults.ingestion.max_traces_per_user in"
        " deploy/tempo/tempo.yml (README, Sizing), or sample at the head:"
        " OTEL_TRACES_SAMPLER=parentbased_traceidratio with OTEL_TRACES_SAMPLER_ARG=0.1",
        "rate_limited": "raise overrides.defaults.ingestion.rate_limit_bytes and burst_size_bytes in"
        " deploy/tempo/tempo.yml, or sample at the head (OTEL_TRACES_SAMPLER_ARG)",
        "trace_too_large": "a trace over overrides.defaults.global.max_bytes_per_trace: look for a span loop,"
        " or raise the limit in deploy/tempo/tempo.yml",
        "": "see the reason in Tempo's docs (Manage trace ingestion) and its log",
    },
)
LOKI = DiscardSource(
    name="Loki",
    signal="logs",
    selector="loki_discarded_samples_total",
    by=("reason",),
    fixes={
        "rate_limited": "raise limits_config.ingestion_rate_mb and ingestion_burst_size_mb in"
        " deploy/loki/loki.yml (README, Sizing); the shipper retries 429s, so lines are late, not lost",
        "per_stream_rate_limit": "raise limits_config.per_stream_rate_limit(_burst) in deploy/loki/loki.yml"
        " and keep shard_streams enabled",
        "line_too_long": "lines over limits_config.max_line_size: lower SHIPPER_MAX_LINE_BYTES to match",
        "greater_than_max_sample_age": "lines older than reject_old_samples_max_age: the shipper re-stamps"
        " them, so another client is pushing old lines",
        "too_far_behind": "out-of-order lines beyond the 1 h window from another client",
        "": "see the reason in Loki's docs (Enforce rate limits and push request validation)",
    },
)
SPAN_EXPORTERS = DiscardSource(
    name="span exporters",
    signal="traces",
    selector="otel_spans_dropped_total",
    by=("reason", "job"),
    fixes={
        "queue_full": "the exporter cannot keep up: raise OTEL_BSP_MAX_QUEUE_SIZE, or sample at the head"
        " (OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG)",
        "export_failed": "Tempo is down or refusing: check TEMPO_OTLP_HTTP_ENDPOINT and Tempo's /ready",
        "": "check the service's span export warnings",
    },
)
LOG_SHIPPER = DiscardSource(
    name="log-shipper",
    signal="logs",
    # Lines dropped because LOKI_ENABLED=false are a choice, not a loss.
    selector='log_shipper_dropped_lines_total{reason!="loki_disabled"}',
    by=("reason", "job"),
    fixes={
        "spool_full": "Loki has been unreachable longer than the spool holds: bring Loki back, or raise"
        " SHIPPER_SPOOL_MAX_BYTES",
        "loki_rejected": "Loki refused a batch (400): read the shipper's `Loki rejected a batch` line",
        "too_large": "a single entry Loki refuses as too large: lower SHIPPER_MAX_LINE_BYTES",
        "": "read the shipper's error lines",
    },
)
LOG_FORWARDERS = DiscardSource(
    name="log forwarders",
    signal="logs",
    # The services' own forwarders (LOG_FORWARD_URL) count drops as `log_forwarder_dropped_lines_total`
    # (matched as any `<prefix>_dropped_lines_total`); the backends' jobs are left out so none of their
    # counters can be mistaken for one.
    selector='{__name__=~".+_dropped_lines_total", __name__!="log_shipper_dropped_lines_total",'
    ' job!~"loki|tempo|prometheus"}',
    by=("reason", "job"),
    fixes={
        "queue_full": "the log-shipper's /ingest was down or slow for longer than the queue holds: check its"
        " /ready and LOG_FORWARD_URL, or raise LOG_FORWARD_MAX_LINES / LOG_FORWARD_MAX_BYTES",
        "rejected": "the shipper refused a batch (4xx): read the service's `Log forwarding: the shipper"
        " refused a batch` line; a 413 means LOG_FORWARD_BATCH_BYTES is above SHIPPER_INGEST_MAX_BYTES",
        "shutdown": "lines still queued when the service stopped: the shipper was down at the time",
        "": "the log-shipper's /ingest is down or slow: check its /ready and LOG_FORWARD_URL",
    },
)

DISCARD_SOURCES = (TEMPO, LOKI, SPAN_EXPORTERS, LOG_SHIPPER, LOG_FORWARDERS)
"""Every place a signal is discarded, backends first."""
