"""One chat completion end to end: model lookup, cache, credit reservation, routing, settlement, signals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import trace

from gateway.cache import Cache, cache_key, is_cacheable
from gateway.inference_metrics import InferenceMetrics
from gateway.providers.base import CallStatus, CompletionStream, ProviderError, StreamLatency
from gateway.providers.catalog import Catalog, ModelConfig, Route
from gateway.providers.router import Call, Router
from gateway.schema import ENCODER, ChatCompletionRequest
from gateway.store import Hold, Store, to_credits
from gateway.tokens import count_prompt_tokens
from telemetry.errors import ApiError, error_body

if TYPE_CHECKING:
    from gateway.keys import Caller

_MODEL_ECHO_LIMIT = 64
T = TypeVar("T")
LogEvent = Callable[[str, str, dict[str, Any], str | None, str | None], None]
"""Writes one JSON line: (level, message, fields, trace_id, span_id), as `JsonSink.write_event`."""
_MESSAGES = {"success": "Inference completed", "cancelled": "Inference cancelled"}
_LEVELS: dict[str, str] = {
    "success": "INFO",
    "cancelled": "INFO",
    "client_error": "WARNING",
    "rate_limited": "WARNING",
}


def cost_micros(model: ModelConfig, prompt_tokens: int, completion_tokens: int) -> int:
    """The cost of a call, tokens times price, in whole micro-credits."""
    return round(
        (prompt_tokens * model.prompt_price + completion_tokens * model.completion_price) * 1_000_000
    )


@dataclass(frozen=True, slots=True)
class CompletionResult:
    """A non-streaming answer: its body and whether the cache served it."""

    body: bytes
    cache_hit: bool


class InferenceService:
    """What `POST /v1/chat/completions` does once the caller is authenticated and the body decoded."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        router: Router,
        store: Store,
        cache: Cache,
        metrics: InferenceMetrics,
        log_event: LogEvent,
    ) -> None:
        self._catalog = catalog
        self._router = router
        self._store = store
        self._cache = cache
        self._metrics = metrics
        self._log_event = log_event

    def _routes(self, request: ChatCompletionRequest) -> tuple[Route, ...]:
        routes = self._catalog.routes_for(request.model)
        if not routes:
            shown = request.model[:_MODEL_ECHO_LIMIT]
            raise ApiError(
                404, f"model {shown!r} not found; GET /v1/models lists them", code="model_not_found"
            )
        return routes

    async def _reserve(
        self, caller: Caller, request: ChatCompletionRequest, routes: tuple[Route, ...]
    ) -> Hold:
        """Hold the worst case across the routes (prompt plus whole output limit) and the key's budget."""
        prompt_tokens = count_prompt_tokens(request.messages)
        micros = max(
            cost_micros(route.model, prompt_tokens, request.output_limit or route.model.max_output_tokens)
            for route in routes
        )
        hold = await self._store.reserve(caller.user_id, micros, caller.key)
        if hold is None:
            raise ApiError(
                402,
                f"insufficient credits: this request may cost up to {to_credits(micros)} credits, "
                f"the balance is {await self._store.balance(caller.user_id)}",
                code="insufficient_credits",
            )
        return hold

    async def complete(
        self, caller: Caller, request: ChatCompletionRequest, *, cache_opt_in: bool
    ) -> CompletionResult:
        """A non-streaming completion, from the cache when allowed and present."""
        started = perf_counter()
        routes = self._routes(request)
        key = None
        if self._cache.max_bytes and is_cacheable(request, opted_in=cache_opt_in):
            key = cache_key(request)
            if (cached := await self._cache.get(key)) is not None:
                self._log(
                    caller,
                    cached.provider,
                    cached.model,
                    "success",
                    cached.prompt_tokens,
                    cached.completion_tokens,
                    0.0,
                    started,
                    cache_hit=True,
                )
                return CompletionResult(cached.body, cache_hit=True)
        reserved = await self._reserve(caller, request, routes)
        call, completion = await self._routed(
            caller, request, reserved, started, lambda: self._router.complete(request, routes)
        )
        charged_credits = await self._charge(
            call, reserved, completion.prompt_tokens, completion.completion_tokens
        )
        provider, model = call.route.provider.name, call.route.model.id
        if key is not None:
            await self._cache.put(
                key,
                completion.body,
                provider=provider,
                model=model,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
            )
        self._log(
            caller,
            provider,
            model,
            "success",
            completion.prompt_tokens,
            completion.completion_tokens,
            charged_credits,
            started,
            attempts=call.attempts,
        )
        return CompletionResult(completion.body, cache_hit=False)

    async def stream(self, caller: Caller, request: ChatCompletionRequest) -> StreamRelay:
        """Open a stream (failing over until its first event); the relay hands out its SSE blocks."""
        started = perf_counter()
        routes = self._routes(request)
        reserved = await self._reserve(caller, request, routes)
        call, stream = await self._routed(
            caller,
            request,
            reserved,
            started,
            lambda: self._router.open_stream(request, routes),
            stream=True,
        )
        return StreamRelay(self, caller, call, stream, reserved, started)

    async def _routed(
        self,
        caller: Caller,
        request: ChatCompletionRequest,
        reserved: Hold,
        started: float,
        route: Callable[[], Awaitable[T]],
        *,
        stream: bool = False,
    ) -> T:
        """Run the routing; when it fails give the reservation back, log, and answer in the OpenAI shape."""
        try:
            return await route()
        except ProviderError as exc:
            await self._store.release(reserved)
            self._log(
                caller,
                exc.provider,
                request.model,
                exc.status,
                0,
                0,
                0.0,
                started,
                error=exc.message,
                stream=stream,
            )
            raise ApiError(exc.http_status, exc.message, type_=exc.error_type, code=exc.status) from exc
        except BaseException:
            await self._store.release(reserved)  # cancelled: the hold still goes back (see `settle_stream`)
            raise

    async def settle_stream(
        self,
        caller: Caller,
        call: Call,
        stream: CompletionStream,
        reserved: Hold,
        started: float,
        status: CallStatus,
        error: ProviderError | None,
    ) -> None:
        """After a stream: release the upstream, end the call, charge for what it produced, write its line.

        A client that left is still charged, with no cancel scope around the store: every store takes a
        settlement (or a release) before its first suspension — SQLite's never suspends, PostgreSQL's
        `Batcher` queues it and sends it from its own task — so a cancellation arriving meanwhile cannot
        undo it. (anyio's `CancelScope(shield=True)`, used here before, shields only from anyio's own
        scopes, not from a native `Task.cancel()`, and cost ~14 µs each, three per stream.)
        """
        await stream.aclose()
        latency = StreamLatency.measure(call.started, stream.timing, stream.completion_tokens)
        self._router.finish(
            call,
            status,
            prompt_tokens=stream.prompt_tokens,
            completion_tokens=stream.completion_tokens,
            response_model=stream.response_model,
            error=error,
            latency=latency,
        )
        charged_credits = await self._charge(call, reserved, stream.prompt_tokens, stream.completion_tokens)
        self._log(
            caller,
            call.route.provider.name,
            call.route.model.id,
            status,
            stream.prompt_tokens,
            stream.completion_tokens,
            charged_credits,
            started,
            attempts=call.attempts,
            stream=True,
            error=error.message if error else None,
            latency=latency,
        )

    def _log(
        self,
        caller: Caller,
        provider: str,
        model: str,
        status: CallStatus,
        prompt_tokens: int,
        completion_tokens: int,
        charged_credits: float,
        started: float,
        *,
        cache_hit: bool = False,
        attempts: int = 1,
        stream: bool = False,
        error: str | None = None,
        latency: StreamLatency | None = None,
    ) -> None:
        """The one JSON line per inference, with the request's trace ids; the key's limits learn its tokens.

        `key_alias`, `key_id` and `user_id` make spend and tokens by key LogQL queries (never metric labels).
        """
        caller.finished(0 if cache_hit else prompt_tokens + completion_tokens)
        fields: dict[str, Any] = {
            "provider": provider,
            "model": model[:_MODEL_ECHO_LIMIT],
            "status": status,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "credits": charged_credits,
            "cache_hit": cache_hit,
            "stream": stream,
            "attempts": attempts,
            "user_id": caller.user_id,
            "key_alias": caller.key.alias,
            "key_id": caller.key.id,
            "duration_ms": round((perf_counter() - started) * 1_000_000) / 1000,  # to the µs
        }
        if latency is not None:
            if latency.first_token is not None:
                fields["ttft_ms"] = round(latency.first_token * 1_000_000) / 1000
            if latency.per_output_token is not None:
                fields["tpot_ms"] = round(latency.per_output_token * 1_000_000) / 1000
        if error is not None:
            fields["error"] = error
        message = _MESSAGES.get(status, "Inference failed")
        context = trace.get_current_span().get_span_context()
        trace_id = span_id = None
        if context.is_valid:
            trace_id = context.trace_id.to_bytes(16, "big").hex()
            span_id = context.span_id.to_bytes(8, "big").hex()
        self._log_event(_LEVELS.get(status, "ERROR"), message, fields, trace_id, span_id)

    async def _charge(self, call: Call, reserved: Hold, prompt_tokens: int, completion_tokens: int) -> float:
        """Settle the reservation at the actual cost and count tokens and credits; the credits charged."""
        model = call.route.model
        charged = await self._store.settle(
            reserved,
            model.id,
            cost=cost_micros(model, prompt_tokens, completion_tokens),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
        charged_credits = to_credits(charged)
        self._metrics.record_usage(
            call.route.provider.name,
            model.id,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            charged_credits=charged_credits,
            exemplar=call.exemplar,
        )
        return charged_credits


_DONE = b"data: [DONE]\n\n"


class StreamRelay:
    """One opened stream on its way to the client: blocks of SSE events, then `[DONE]`, then settlement.

    A plain object driven by `EventStream` (not an async generator: one frame less to resume per chunk).
    `next_block` until it gives None, then `close` exactly once, also when the client left mid-stream.
    """

    __slots__ = ("_call", "_caller", "_error", "_inference", "_over", "_reserved", "_started", "_stream")

    def __init__(
        self,
        inference: InferenceService,
        caller: Caller,
        call: Call,
        stream: CompletionStream,
        reserved: Hold,
        started: float,
    ) -> None:
        self._inference = inference
        self._caller = caller
        self._call = call
        self._stream = stream
        self._reserved = reserved
        self._started = started
        self._over = False
        self._error: ProviderError | None = None

    async def next_block(self) -> bytes | None:
        """The next events; `[DONE]` after the last (with it, when the upstream ended in the same read)."""
        if self._over:
            return None
        try:
            block = await self._stream.next_block()
        except ProviderError as exc:
            # Streaming has begun: no retry. The client gets an error event instead of `[DONE]`.
            self._over, self._error = True, exc
            document = error_body(exc.http_status, exc.message, type_=exc.error_type, code=exc.status)
            return b"data: " + ENCODER.encode(document) + b"\n\n"
        if block is None:
            self._over = True
            return _DONE
        if self._stream.finished:
            self._over = True
            return block + _DONE
        return block

    async def close(self, *, interrupted: bool) -> None:
        """Settle and record the stream; `interrupted`: the client left (or the task was cancelled) first."""
        error = self._error
        status: CallStatus = (
            error.status if error else "cancelled" if interrupted and not self._over else "success"
        )
        await self._inference.settle_stream(
            self._caller, self._call, self._stream, self._reserved, self._started, status, error
        )
