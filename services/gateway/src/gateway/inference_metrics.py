"""The gateway's inference families (SPEC §3): requests, duration, tokens, credits, provider health, cache."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Gauge

from gateway.providers.base import CallStatus, StreamLatency
from gateway.providers.catalog import Catalog
from gateway.providers.health import ProviderHealth
from telemetry.loop_metrics import (
    CounterChild,
    GaugeChild,
    HistogramChild,
    LoopCounter,
    LoopGauge,
    LoopHistogram,
)

OTHER: Final = "other"
"""Label value for any provider or model the catalog does not name."""

STATUSES: tuple[CallStatus, ...] = (
    "success",
    "error",
    "timeout",
    "rate_limited",
    "client_error",
    "cancelled",
)
# LLM calls take from tens of milliseconds to minutes.
INFERENCE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0)
# Time to first token: a cached prefix answers in tens of ms, a long prompt on a busy model in tens of s.
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0)
# Time per output token: ~1 ms (small models on big GPUs) to ~0.5 s (overloaded or huge models).
TPOT_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.015,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
)

Exemplar = str | None
"""The trace id an observation's exemplar points at; None for an unsampled span."""


def exemplar_for(span: trace.Span) -> Exemplar:
    """The trace id of a sampled span, None otherwise (unsampled traces cannot be opened)."""
    context = span.get_span_context()
    return context.trace_id.to_bytes(16, "big").hex() if context.trace_flags.sampled else None


@dataclass(frozen=True, slots=True)
class CacheMetrics:
    """One cache's hit, miss and size children."""

    hits: CounterChild
    misses: CounterChild
    size_bytes: GaugeChild


@dataclass(frozen=True, slots=True)
class _ModelInstruments:
    """Children pre-bound for one (provider, model)."""

    requests: dict[str, CounterChild]
    duration: HistogramChild
    prompt_tokens: CounterChild
    completion_tokens: CounterChild
    credits: CounterChild
    time_to_first_token: HistogramChild
    time_per_output_token: HistogramChild


class InferenceMetrics:
    """Every inference family on `registry`, label values bounded to the catalog.

    The per-call families are lock-free `loop_metrics` ones: they are updated from the event loop only.
    """

    def __init__(
        self, registry: CollectorRegistry, catalog: Catalog, health: Mapping[str, ProviderHealth]
    ) -> None:
        self.requests = LoopCounter(
            "model_inference_requests",
            "Provider calls by provider, model and outcome.",
            ["provider", "model", "status"],
            registry,
        )
        self.duration = LoopHistogram(
            "model_inference_duration_seconds",
            "Provider call duration in seconds (a stream: until its last event).",
            ["provider", "model"],
            registry,
            INFERENCE_BUCKETS,
        )
        self.tokens = LoopCounter(
            "tokens_used",
            "Tokens processed by providers, by token type (prompt or completion).",
            ["provider", "model", "token_type"],
            registry,
        )
        self.credits = LoopCounter(
            "credits_used", "Credits charged to users.", ["provider", "model"], registry
        )
        self.time_to_first_token = LoopHistogram(
            "model_inference_time_to_first_token_seconds",
            "Streamed calls: seconds from the call's start to the first chunk carrying text.",
            ["provider", "model"],
            registry,
            TTFT_BUCKETS,
        )
        self.time_per_output_token = LoopHistogram(
            "model_inference_time_per_output_token_seconds",
            "Streamed calls: seconds per output token after the first (last text - first) / (tokens - 1).",
            ["provider", "model"],
            registry,
            TPOT_BUCKETS,
        )
        availability = Gauge(
            "provider_availability",
            "1 if the provider answered in the rolling window (or was not called), 0 if every call failed.",
            ["provider"],
            registry=registry,
        )
        error_rate = Gauge(
            "provider_error_rate",
            "Failed share of provider calls over the rolling window.",
            ["provider"],
            registry=registry,
        )
        response_time = Gauge(
            "provider_response_time_seconds",
            "Mean provider call duration over the rolling window.",
            ["provider"],
            registry=registry,
        )
        # Health is computed when scraped, so the window keeps rolling while no call arrives.
        for name, provider_health in health.items():
            availability.labels(name).set_function(provider_health.availability)
            error_rate.labels(name).set_function(provider_health.error_rate)
            response_time.labels(name).set_function(provider_health.response_time)
        self._cache_hits = LoopCounter(
            "cache_hits", "Cache lookups served from the cache.", ["cache_name"], registry
        )
        self._cache_misses = LoopCounter(
            "cache_misses", "Cache lookups that missed.", ["cache_name"], registry
        )
        self._cache_size = LoopGauge("cache_size_bytes", "Bytes held by the cache.", ["cache_name"], registry)
        self._instruments: dict[tuple[str, str], _ModelInstruments] = {}
        for provider in catalog.providers:
            for model in provider.models:
                self._instruments[provider.name, model.id] = self._bind(provider.name, model.id)
        self._other = self._bind(OTHER, OTHER)

    def _bind(self, provider: str, model: str) -> _ModelInstruments:
        return _ModelInstruments(
            requests={status: self.requests.labels(provider, model, status) for status in STATUSES},
            duration=self.duration.labels(provider, model),
            prompt_tokens=self.tokens.labels(provider, model, "prompt"),
            completion_tokens=self.tokens.labels(provider, model, "completion"),
            credits=self.credits.labels(provider, model),
            time_to_first_token=self.time_to_first_token.labels(provider, model),
            time_per_output_token=self.time_per_output_token.labels(provider, model),
        )

    def _for(self, provider: str, model: str) -> _ModelInstruments:
        return self._instruments.get((provider, model), self._other)

    def cache(self, name: str) -> CacheMetrics:
        """The children for the cache called `name`."""
        size = self._cache_size.labels(name)
        size.set(0)
        return CacheMetrics(self._cache_hits.labels(name), self._cache_misses.labels(name), size)

    def record_call(
        self, provider: str, model: str, status: CallStatus, seconds: float, exemplar: Exemplar = None
    ) -> None:
        """Count one provider call and observe its duration."""
        instruments = self._for(provider, model)
        instruments.requests[status].inc(1, exemplar)
        instruments.duration.observe(seconds, exemplar)

    def record_usage(
        self,
        provider: str,
        model: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        charged_credits: float,
        exemplar: Exemplar = None,
    ) -> None:
        """Count the tokens a call used and the credits charged for it."""
        instruments = self._for(provider, model)
        if prompt_tokens:
            instruments.prompt_tokens.inc(prompt_tokens, exemplar)
        if completion_tokens:
            instruments.completion_tokens.inc(completion_tokens, exemplar)
        if charged_credits:
            instruments.credits.inc(charged_credits, exemplar)

    def record_stream_latency(
        self, provider: str, model: str, latency: StreamLatency, exemplar: Exemplar = None
    ) -> None:
        """Observe a streamed call's time to first token and time per output token, where measured."""
        instruments = self._for(provider, model)
        if latency.first_token is not None:
            instruments.time_to_first_token.observe(latency.first_token, exemplar)
        if latency.per_output_token is not None:
            instruments.time_per_output_token.observe(latency.per_output_token, exemplar)
