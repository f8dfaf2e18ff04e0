"""What every provider kind offers the router, and the failures it may raise."""

from __future__ import annotations

from collections.abc import AsyncIterator
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


class CompletionStream(Protocol):
    """An opened stream: the first event has arrived, so it can no longer fail over."""

    prompt_tokens: int
    response_model: str

    @property
    def completion_tokens(self) -> int:
        """Completion tokens so far (the upstream's own count once it sent one)."""
        ...

    def events(self) -> AsyncIterator[bytes]:
        """SSE events (`data: {...}` and a blank line), no final `[DONE]`; counts update as they pass."""
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
