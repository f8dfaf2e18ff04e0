"""The `openai` kind: any OpenAI-compatible upstream (OpenAI, OpenRouter, vLLM, Ollama), one pooled client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import msgspec
from opentelemetry import propagate

from gateway.providers.base import (
    Completion,
    ProviderError,
    ProviderRateLimitError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from gateway.providers.catalog import ModelConfig, ProviderConfig
from gateway.schema import ENCODER, ChatCompletionRequest, StreamOptions, Usage
from gateway.tokens import count_prompt_tokens, count_text_tokens

_ERROR_TEXT_LIMIT = 300


class _UpstreamMessage(msgspec.Struct):
    content: str | None = None


class _UpstreamChoice(msgspec.Struct):
    message: _UpstreamMessage | None = None
    delta: _UpstreamMessage | None = None
    finish_reason: str | None = None


class _UpstreamReply(msgspec.Struct):
    """What the gateway reads from an upstream completion or chunk; everything else passes through."""

    choices: list[_UpstreamChoice]
    model: str = ""
    usage: Usage | None = None


_REPLY_DECODER = msgspec.json.Decoder(_UpstreamReply)


def create_http_client(max_connections: int = 200) -> httpx.AsyncClient:
    """The one pooled client every `openai` provider shares; timeouts are set per provider on each call."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections // 2),
        timeout=httpx.Timeout(60.0, connect=10.0),
        follow_redirects=False,
    )


def _upstream_text(body: bytes) -> str:
    """The upstream's own error message when it sent one, else the start of its body."""
    try:
        document = msgspec.json.decode(body)
        message = document.get("error", {}).get("message") if isinstance(document, dict) else None
    except (msgspec.DecodeError, AttributeError):
        message = None
    text = message if isinstance(message, str) else body.decode(errors="replace")
    return text[:_ERROR_TEXT_LIMIT]


class OpenAIProvider:
    """Calls `{base_url}/chat/completions` with the provider's key, sending `traceparent`."""

    kind = "openai"

    def __init__(
        self, config: ProviderConfig, client: httpx.AsyncClient, environ: dict[str, str] | None = None
    ) -> None:
        env = os.environ if environ is None else environ
        self.name = config.name
        self._client = client
        self._url = str(config.base_url).rstrip("/") + "/chat/completions"
        self._timeout = httpx.Timeout(config.timeout_seconds, connect=min(config.timeout_seconds, 10.0))
        key = env.get(config.api_key_env) if config.api_key_env else None
        self._auth = {"Authorization": f"Bearer {key}"} if key else {}

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self._auth}
        propagate.inject(headers)
        return headers

    def _payload(self, request: ChatCompletionRequest, model: ModelConfig, *, stream: bool) -> bytes:
        options = StreamOptions(include_usage=True) if stream else None
        upstream = msgspec.structs.replace(
            request, model=model.upstream_name, stream=stream, stream_options=options
        )
        if request.output_limit is None:
            # The credit reservation assumed this limit, so the upstream must keep to it.
            upstream = msgspec.structs.replace(upstream, max_tokens=model.max_output_tokens)
        return ENCODER.encode(upstream)

    def _failure(self, status_code: int, body: bytes) -> ProviderError:
        """The error for a non-200 answer."""
        text = f"{self.name} answered {status_code}: {_upstream_text(body)}"
        if status_code == 429:
            return ProviderRateLimitError(self.name, text)
        if status_code in {401, 403} or status_code >= 500 or status_code < 400:
            return ProviderUnavailableError(self.name, text)
        return ProviderRejectedError(self.name, text)

    def _transport_failure(self, exc: httpx.HTTPError) -> ProviderError:
        if isinstance(exc, httpx.TimeoutException):
            return ProviderTimeoutError(
                self.name, f"{self.name} did not answer in time ({type(exc).__name__})"
            )
        return ProviderUnavailableError(self.name, f"{self.name} unreachable ({type(exc).__name__})")

    async def complete(self, request: ChatCompletionRequest, model: ModelConfig) -> Completion:
        """POST the request and pass the upstream's JSON through once it reads as a completion."""
        try:
            response = await self._client.post(
                self._url,
                content=self._payload(request, model, stream=False),
                headers=self._headers(),
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise self._transport_failure(exc) from exc
        body = response.content
        if response.status_code != 200:
            raise self._failure(response.status_code, body)
        try:
            reply = _REPLY_DECODER.decode(body)
        except msgspec.MsgspecError as exc:
            raise ProviderUnavailableError(
                self.name, f"{self.name} sent a malformed completion: {exc}"
            ) from exc
        if reply.usage is not None:
            prompt_tokens, completion_tokens = reply.usage.prompt_tokens, reply.usage.completion_tokens
        else:
            prompt_tokens = count_prompt_tokens(request.messages)
            completion_tokens = sum(
                count_text_tokens(choice.message.content or "") for choice in reply.choices if choice.message
            )
        return Completion(body, prompt_tokens, completion_tokens, reply.model or model.upstream_name)

    async def open_stream(self, request: ChatCompletionRequest, model: ModelConfig) -> OpenAIStream:
        """Send the request and read up to the first event, so failures before it can still fall back."""
        upstream_request = self._client.build_request(
            "POST",
            self._url,
            content=self._payload(request, model, stream=True),
            headers={**self._headers(), "Accept": "text/event-stream"},
            timeout=self._timeout,
        )
        try:
            response = await self._client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_failure(exc) from exc
        if response.status_code != 200:
            try:
                body = await response.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await response.aclose()
            raise self._failure(response.status_code, body)
        stream = OpenAIStream(self.name, response, request, model)
        try:
            await stream.prime()
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def aclose(self) -> None:
        """The shared client is closed by the app's lifespan."""


class OpenAIStream:
    """Upstream SSE passed through event by event, counting tokens on the way."""

    def __init__(
        self, provider: str, response: httpx.Response, request: ChatCompletionRequest, model: ModelConfig
    ) -> None:
        self._provider = provider
        self._response = response
        self._lines = response.aiter_lines()
        self._first: bytes | None = None
        self._done = False
        self._finished = False
        self._usage_seen = False
        self._forward_usage = request.stream_options is not None and request.stream_options.include_usage
        self.prompt_tokens = count_prompt_tokens(request.messages)
        self.completion_tokens = 0
        self.response_model = model.upstream_name

    async def prime(self) -> None:
        """Wait for the first event."""
        self._first = await self._next_event()

    async def _next_event(self) -> bytes | None:
        """The next event to forward, None at `[DONE]` or the end of the body."""
        while not self._done:
            try:
                line = await anext(self._lines)
            except StopAsyncIteration:
                self._done = True
                if not self._finished:
                    # The body ended before `[DONE]` or any finish_reason: the upstream went away mid-answer.
                    raise ProviderUnavailableError(
                        self._provider, f"{self._provider} stream ended early"
                    ) from None
                break
            except httpx.HTTPError as exc:
                self._done = True
                if isinstance(exc, httpx.TimeoutException):
                    raise ProviderTimeoutError(
                        self._provider, f"{self._provider} stalled mid-stream"
                    ) from exc
                raise ProviderUnavailableError(self._provider, f"{self._provider} stream broke") from exc
            if not line.startswith("data:"):
                continue  # blank separators, `event:` lines and `: keep-alive` comments
            data = line[5:].strip()
            if data == "[DONE]":
                self._done = self._finished = True
                break
            if (event := self._read(data.encode())) is not None:
                return event
        return None

    def _read(self, data: bytes) -> bytes | None:
        """Count what `data` carries; the bytes to forward, or None for a usage chunk nobody asked for."""
        try:
            reply = _REPLY_DECODER.decode(data)
        except msgspec.MsgspecError as exc:
            self._done = True
            raise ProviderUnavailableError(
                self._provider, f"{self._provider} sent a malformed chunk: {exc}"
            ) from exc
        if reply.model:
            self.response_model = reply.model
        if any(choice.finish_reason for choice in reply.choices):
            self._finished = True
        if reply.usage is not None:
            self._usage_seen = True
            self.prompt_tokens = reply.usage.prompt_tokens
            self.completion_tokens = reply.usage.completion_tokens
        elif not self._usage_seen:
            self.completion_tokens += sum(
                count_text_tokens(choice.delta.content or "") for choice in reply.choices if choice.delta
            )
        if reply.usage is not None and not reply.choices and not self._forward_usage:
            return None
        return b"data: " + data + b"\n\n"

    async def events(self) -> AsyncIterator[bytes]:
        """The primed first event, then the rest."""
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        while (event := await self._next_event()) is not None:
            yield event

    async def aclose(self) -> None:
        """Close the upstream response, returning its connection to the pool."""
        await self._response.aclose()
