"""What every provider kind offers the router, and the failures it may raise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from opentelemetry.trace import Span

from gateway.providers.catalog import ModelConfig
from gateway.schema import ChatCompletionRequest

CallStatus = Literal["success", "error", "timeout", "rate_limited", "client_error", "cancelled"]
"""Outcome of one provider call: the whole `status` label set of `model_inference_requests_total`."""


class ProviderError(Exception):
    """A provider call failed; `status` is the metric label, `http_status` what the client gets."""

    status: CallStatus = "error"
    http_status = 502
    error_type = "upstream_error"
    fallback = True
    """Whether another provider may be tried (connection errors, 5xx, timeouts, garbage)."""

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(message)
        self.provider = provider
        self.message = message


class ProviderUnavailableError(ProviderError):
    """Connection refused or reset, a 5xx, a rejected gateway key, or a response that is not a completion."""


class ProviderTimeoutError(ProviderError):
    """The provider did not answer within its timeout."""

    status: CallStatus = "timeout"
    http_status = 504
    error_type = "upstream_timeout"


class ProviderRateLimitError(ProviderError):
    """The provider answered 429."""

    status: CallStatus = "rate_limited"
    http_status = 429
    error_type = "rate_limit_error"
    fallback = False


class ProviderRejectedError(ProviderError):
    """The provider refused the request itself (a 4xx about its content): the client's to fix."""

    status: CallStatus = "client_error"
    http_status = 400
    error_type = "invalid_request_error"
    fallback = False


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished non-streaming completion: the body to send and what it cost."""

    body: bytes
    prompt_tokens: int
    completion_tokens: int
    response_model: str


@dataclass(slots=True)
class StreamTiming:
    """When a stream's chunks arrived (`perf_counter` seconds; None until it happened)."""

    first_chunk: float | None = None
    """The first chunk of any kind (often the role, no text yet)."""
    first_token: float | None = None
    """The first chunk carrying generated text."""
    last_token: float | None = None
    """The latest chunk carrying generated text."""

    def saw_text(self, now: float) -> None:
        """A chunk with text arrived at `now`."""
        if self.first_token is None:
            self.first_token = now
        self.last_token = now


@dataclass(frozen=True, slots=True)
class StreamLatency:
    """What the user of a stream waited: for the first chunk and text, and between tokens (seconds)."""

    first_chunk: float | None
    first_token: float | None
    """Time to first token (TTFT): from the call's start to the first text."""
    per_output_token: float | None
    """Time per output token (TPOT) after the first: (last text - first text) / (completion tokens - 1)."""

    @classmethod
    def measure(cls, started: float, timing: StreamTiming, completion_tokens: int) -> StreamLatency:
        """The latencies of a call that started at `started` (perf_counter); None where not observed."""
        first, last = timing.first_token, timing.last_token
        per_token = None
        if first is not None and last is not None and last > first and completion_tokens > 1:
            per_token = (last - first) / (completion_tokens - 1)
        return cls(
            first_chunk=None if timing.first_chunk is None else timing.first_chunk - started,
            first_token=None if first is None else first - started,
            per_output_token=per_token,
        )


class CompletionStream(Protocol):
    """An opened stream: the first event has arrived, so it can no longer fail over."""

    response_model: str
    timing: StreamTiming

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens to charge: the upstream's count when it sent one."""
        ...

    @property
    def finished(self) -> bool:
        """The upstream said it is done: the block last returned was the final one."""
        ...

    @property
    def completion_tokens(self) -> int:
        """Completion tokens so far (the upstream's own count once it sent one)."""
        ...

    async def next_block(self) -> bytes | None:
        """The next SSE events to relay (`data: {...}` and a blank line each), as one block.

        None at the end (no final `[DONE]`). Counts and timing update as they pass.
        """
        ...

    async def aclose(self) -> None:
        """Release the upstream connection (idempotent)."""
        ...


class Provider(Protocol):
    """One configured provider, of any kind."""

    name: str
    kind: str
    times_itself: bool
    """The provider keeps to the catalog's `timeout_seconds` itself; otherwise the router times each call."""

    async def complete(self, request: ChatCompletionRequest, model: ModelConfig, span: Span) -> Completion:
        """A whole completion, or a `ProviderError`; `span` is the attempt's (its context goes upstream)."""
        ...

    async def open_stream(
        self, request: ChatCompletionRequest, model: ModelConfig, span: Span
    ) -> CompletionStream:
        """A stream whose first event has arrived, or a `ProviderError` (so the router may fall back)."""
        ...

    async def aclose(self) -> None:
        """Release what the provider holds."""
        ...
