"""Routing with fallback: try the providers serving a model, available ones first, until one answers.

Each attempt is a child span with GenAI attributes and one `model_inference_*` observation; connection
errors, 5xx, timeouts and malformed answers fall back to the next provider. A stream is only handed back
once its first event has arrived, and from then on it is never retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any, TypeVar

from loguru import logger
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.inference_metrics import Exemplar, InferenceMetrics, exemplar_for
from gateway.providers.base import (
    CallStatus,
    Completion,
    CompletionStream,
    Provider,
    ProviderError,
    ProviderTimeoutError,
    StreamLatency,
)
from gateway.providers.catalog import ModelConfig, Route
from gateway.providers.health import ProviderHealth
from gateway.schema import ChatCompletionRequest

T = TypeVar("T")
# Outcomes that say nothing bad about the provider's health.
_HEALTHY = frozenset({"success", "client_error", "cancelled"})


@dataclass(slots=True)
class Call:
    """One provider attempt in flight: its route, span and start time."""

    route: Route
    span: trace.Span
    started: float
    attempts: int
    """How many providers were tried for this request, this one included."""
    exemplar: Exemplar
    """The trace exemplar for the series this call touches (None when the span is not sampled)."""


class Router:
    """Picks providers for a model and records every attempt."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        health: Mapping[str, ProviderHealth],
        metrics: InferenceMetrics,
        tracer: trace.Tracer,
    ) -> None:
        self._providers = providers
        self._health = health
        self._metrics = metrics
        self._tracer = tracer
        self._attributes: dict[tuple[str, str], dict[str, Any]] = {}

    def order(self, routes: Sequence[Route]) -> list[Route]:
        """Available providers first, catalog order otherwise (unavailable ones are still tried last)."""
        if len(routes) == 1:
            return list(routes)
        return sorted(routes, key=lambda route: not self._health[route.provider.name].available)

    async def complete(
        self, request: ChatCompletionRequest, routes: Sequence[Route]
    ) -> tuple[Call, Completion]:
        """The first provider's completion; the last `ProviderError` when none answers."""
        call, completion = await self._first(
            request, routes, lambda provider, model, span: provider.complete(request, model, span)
        )
        self.finish(
            call,
            "success",
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            response_model=completion.response_model,
        )
        return call, completion

    async def open_stream(
        self, request: ChatCompletionRequest, routes: Sequence[Route]
    ) -> tuple[Call, CompletionStream]:
        """The first provider stream whose first event arrived; the caller ends the call with `finish`."""
        return await self._first(
            request, routes, lambda provider, model, span: provider.open_stream(request, model, span)
        )

    async def _first(
        self,
        request: ChatCompletionRequest,
        routes: Sequence[Route],
        attempt_with: Callable[[Provider, ModelConfig, trace.Span], Awaitable[T]],
    ) -> tuple[Call, T]:
        """Try each route in order until one answers; a failed attempt is finished here, a good one is not."""
        failure: ProviderError | None = None
        for attempt, route in enumerate(self.order(routes), start=1):
            call = self._start(route, request, attempt)
            name = route.provider.name
            try:
                result = await self._attempt(call, attempt_with)
            except TimeoutError:
                failure = self._fail(call, ProviderTimeoutError(name, f"{name} timed out"))
            except ProviderError as exc:
                failure = self._fail(call, exc)
            except BaseException:
                self.finish(call, "cancelled")
                raise
            else:
                return call, result
            if not failure.fallback:
                raise failure
        assert failure is not None  # noqa: S101 - routes is never empty: unknown models are rejected first
        raise failure

    async def _attempt(
        self, call: Call, attempt_with: Callable[[Provider, ModelConfig, trace.Span], Awaitable[T]]
    ) -> T:
        """One bounded call: timed here unless the provider keeps to its timeout itself."""
        route = call.route
        provider = self._providers[route.provider.name]
        if provider.times_itself or (
            route.provider.kind == "local" and route.model.latency_ms / 1000 < route.provider.timeout_seconds
        ):
            return await attempt_with(provider, route.model, call.span)
        async with asyncio.timeout(route.provider.timeout_seconds):
            return await attempt_with(provider, route.model, call.span)

    def _start(self, route: Route, request: ChatCompletionRequest, attempt: int) -> Call:
        key = (route.provider.name, route.model.id)
        if (base := self._attributes.get(key)) is None:
            base = self._attributes[key] = _base_attributes(route)
        attributes = dict(base)
        if attempt > 1:
            attributes["gatewayz.attempt"] = attempt
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        if request.output_limit is not None:
            attributes["gen_ai.request.max_tokens"] = request.output_limit
        span = self._tracer.start_span(
            f"chat {route.model.upstream_name}", kind=SpanKind.CLIENT, attributes=attributes
        )
        return Call(route, span, perf_counter(), attempt, exemplar_for(span))

    def _fail(self, call: Call, exc: ProviderError) -> ProviderError:
        self.finish(call, exc.status, error=exc)
        if exc.fallback:
            logger.warning(
                "Provider call failed; trying the next provider",
                provider=call.route.provider.name,
                model=call.route.model.id,
                status=exc.status,
                error=exc.message,
            )
        return exc

    def finish(
        self,
        call: Call,
        status: CallStatus,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        response_model: str | None = None,
        error: ProviderError | None = None,
        latency: StreamLatency | None = None,
    ) -> float:
        """End the call: its span, health and `model_inference_*` observations; the seconds it took.

        `latency`, for a stream, adds the time to first token and per output token to the span and metrics.
        """
        seconds = perf_counter() - call.started
        provider, model = call.route.provider.name, call.route.model.id
        self._health[provider].record(ok=status in _HEALTHY, seconds=seconds)
        self._metrics.record_call(provider, model, status, seconds, call.exemplar)
        span = call.span
        attributes: dict[str, Any] = {
            "gen_ai.usage.input_tokens": prompt_tokens,
            "gen_ai.usage.output_tokens": completion_tokens,
        }
        if latency is not None:
            self._metrics.record_stream_latency(provider, model, latency, call.exemplar)
            if latency.first_chunk is not None:
                attributes["gen_ai.response.time_to_first_chunk"] = latency.first_chunk  # GenAI semconv
            if latency.first_token is not None:
                attributes["gatewayz.time_to_first_token"] = latency.first_token
            if latency.per_output_token is not None:
                attributes["gatewayz.time_per_output_token"] = latency.per_output_token
        if response_model is not None:
            attributes["gen_ai.response.model"] = response_model
        if error is not None:
            attributes["error.type"] = type(error).__name__
            span.set_status(Status(StatusCode.ERROR, error.message))
        span.set_attributes(attributes)
        span.end()
        return seconds


def _base_attributes(route: Route) -> dict[str, Any]:
    """The GenAI attributes every call on `route` carries."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": route.provider.kind,
        "gen_ai.provider.name": route.provider.name,
        "gen_ai.request.model": route.model.upstream_name,
    }
    if route.provider.base_url is not None:
        attributes["server.address"] = route.provider.base_url.split("://", 1)[-1].split("/", 1)[0]
    return attributes
