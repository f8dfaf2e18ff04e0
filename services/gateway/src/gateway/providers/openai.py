"""The `openai` kind: any OpenAI-compatible upstream (OpenAI, OpenRouter, vLLM, Ollama), one pooled client."""

from __future__ import annotations

import os
from time import perf_counter

import msgspec
from opentelemetry.trace import Span

from gateway.providers.base import (
    Completion,
    ProviderError,
    ProviderRateLimitError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    StreamTiming,
)
from gateway.providers.catalog import ModelConfig, ProviderConfig
from gateway.providers.http_client import (
    ConnectTimeoutError,
    Endpoint,
    HttpClient,
    HttpError,
    ReadTimeoutError,
    Response,
    TotalTimeoutError,
)
from gateway.schema import ENCODER, ChatCompletionRequest, StreamOptions, Usage
from gateway.tokens import count_prompt_tokens, count_text_tokens
from telemetry.propagation import trace_headers

_ERROR_TEXT_LIMIT = 300
_MAX_BODY_BYTES = 32 * 1024 * 1024
"""A completion (or error) body read whole larger than this is a failed call, not a memory spike."""


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


def create_http_client(max_connections: int = 256) -> HttpClient:
    """The one pooled client every `openai` provider shares; timeouts are set per provider on each call."""
    return HttpClient(max_connections=max_connections, connect_timeout=10.0)


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
    """Calls `{base_url}/chat/completions` with the provider's key, sending `traceparent`.

    The request head (request line, `Host`, content type, key) is built once per provider; a call adds the
    trace context, `Content-Length` and the re-encoded body, and goes out in one write.
    """

    kind = "openai"
    times_itself = True
    """`timeout_seconds` bounds the whole call (a stream: until its first event) inside the client."""

    def __init__(
        self, config: ProviderConfig, client: HttpClient, environ: dict[str, str] | None = None
    ) -> None:
        env = os.environ if environ is None else environ
        self.name = config.name
        self._client = client
        self._endpoint = Endpoint.parse(str(config.base_url).rstrip("/") + "/chat/completions")
        self._timeout = config.timeout_seconds
        key = env.get(config.api_key_env) if config.api_key_env else None
        fixed = {
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
            "User-Agent": "gatewayz-gateway",
        }
        if key:
            fixed["Authorization"] = f"Bearer {key}"
        self._json_head = self._endpoint.request_head("POST", {**fixed, "Accept": "application/json"})
        self._stream_head = self._endpoint.request_head("POST", {**fixed, "Accept": "text/event-stream"})

    def _payload(self, request: ChatCompletionRequest, model: ModelConfig, *, stream: bool) -> bytes:
        options = StreamOptions(include_usage=True) if stream else None
        upstream = msgspec.structs.replace(
            request, model=model.upstream_name, stream=stream, stream_options=options
        )
        if request.output_limit is None:
            # The credit reservation assumed this limit, so the upstream must keep to it.
            upstream = msgspec.structs.replace(upstream, max_tokens=model.max_output_tokens)
        return ENCODER.encode(upstream)

    def _message(self, head: bytes, body: bytes, span: Span) -> bytes:
        """The whole request: the fixed head, the attempt's trace context, the length, the body."""
        context = "".join(f"{name}: {value}\r\n" for name, value in trace_headers(span).items())
        return b"".join((head, context.encode("latin-1"), b"Content-Length: %d\r\n\r\n" % len(body), body))

    async def _send(self, head: bytes, body: bytes, span: Span) -> Response:
        """The answer once its head is in; a non-200 answer is read and raised as a `ProviderError`."""
        try:
            response = await self._client.request(
                self._endpoint,
                self._message(head, body, span),
                read_timeout=self._timeout,
                total_timeout=self._timeout,
            )
        except HttpError as exc:
            raise self._transport_failure(exc) from exc
        if response.status != 200:
            try:
                error_body = await response.read(_MAX_BODY_BYTES)
            except HttpError:
                error_body = b""
            finally:
                response.close()
            raise self._failure(response.status, error_body)
        return response

    def _failure(self, status_code: int, body: bytes) -> ProviderError:
        """The error for a non-200 answer."""
        text = f"{self.name} answered {status_code}: {_upstream_text(body)}"
        if status_code == 429:
            return ProviderRateLimitError(self.name, text)
        if status_code in {401, 403} or status_code >= 500 or status_code < 400:
            return ProviderUnavailableError(self.name, text)
        return ProviderRejectedError(self.name, text)

    def _transport_failure(self, exc: HttpError) -> ProviderError:
        if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | TotalTimeoutError):
            return ProviderTimeoutError(
                self.name, f"{self.name} did not answer in time ({type(exc).__name__})"
            )
        return ProviderUnavailableError(self.name, f"{self.name} unreachable ({type(exc).__name__})")

    async def complete(self, request: ChatCompletionRequest, model: ModelConfig, span: Span) -> Completion:
        """POST the request and pass the upstream's JSON through once it reads as a completion."""
        response = await self._send(self._json_head, self._payload(request, model, stream=False), span)
        try:
            body = await response.read(_MAX_BODY_BYTES)
        except HttpError as exc:
            raise self._transport_failure(exc) from exc
        finally:
            response.close()
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

    async def open_stream(
        self, request: ChatCompletionRequest, model: ModelConfig, span: Span
    ) -> OpenAIStream:
        """Send the request and read up to the first event, so failures before it can still fall back."""
        response = await self._send(self._stream_head, self._payload(request, model, stream=True), span)
        stream = OpenAIStream(self.name, response, request, model)
        try:
            await stream.prime()
        except BaseException:
            await stream.aclose()
            raise
        response.end_total_timeout()  # from the first event on, only the read timeout applies
        return stream

    async def aclose(self) -> None:
        """The shared client is closed by the app's lifespan."""


class OpenAIStream:
    """Upstream SSE passed through event by event, counting tokens on the way.

    Body pieces are split into lines with one `bytes.split` each (SSE lines end in LF or CRLF); every
    `data:` payload is decoded once, to read its model, finish reason and usage, and forwarded as it came.
    """

    def __init__(
        self, provider: str, response: Response, request: ChatCompletionRequest, model: ModelConfig
    ) -> None:
        self._provider = provider
        self._response = response
        self._read_piece = response.piece_reader()
        self._rest = b""
        self._pending_error: ProviderError | None = None
        self._first: bytes | None = None
        self._done = False
        self._finished = False
        self._forward_usage = request.stream_options is not None and request.stream_options.include_usage
        self._messages = request.messages
        self._usage_prompt: int | None = None
        self._counted_prompt: int | None = None
        self._usage_completion: int | None = None
        self._texts: list[str] = []
        self._counted = (0, 0)
        self.response_model = model.upstream_name
        self.timing = StreamTiming()

    @property
    def prompt_tokens(self) -> int:
        """The upstream's own count when its usage chunk arrived, else the prompt's, counted here once.

        Counted only when needed: the reservation has already counted the prompt (a 2,000-token ASCII prompt
        ~46 µs, other text ~870 µs: `gateway.tokens`), and an upstream asked for usage (we always ask) sends
        its own.
        """
        if self._usage_prompt is not None:
            return self._usage_prompt
        if self._counted_prompt is None:
            self._counted_prompt = count_prompt_tokens(self._messages)
        return self._counted_prompt

    @property
    def completion_tokens(self) -> int:
        """The upstream's own count when its usage chunk arrived, else the relayed text's tokens."""
        if self._usage_completion is not None:
            return self._usage_completion
        seen, count = self._counted
        if seen != len(self._texts):
            count += sum(count_text_tokens(text) for text in self._texts[seen:])
            self._counted = (len(self._texts), count)
        return count

    @property
    def finished(self) -> bool:
        """The upstream said `[DONE]`: the block just returned was the last."""
        return self._done and self._finished

    async def prime(self) -> None:
        """Wait for the first events (a failure before them may still fall back)."""
        self._first = await self.next_block()

    async def next_block(self) -> bytes | None:
        """The events that have arrived, as one block to forward; None at `[DONE]` or the end of the body.

        Events that came in one piece leave in one write (nothing waits for more to arrive).
        """
        if (first := self._first) is not None:
            self._first = None
            return first
        while True:
            if (error := self._pending_error) is not None:
                self._pending_error = None
                raise error
            if self._done:
                return None
            try:
                piece = await self._read_piece()
            except HttpError as exc:
                self._done = True
                if isinstance(exc, ReadTimeoutError):
                    raise ProviderTimeoutError(
                        self._provider, f"{self._provider} stalled mid-stream"
                    ) from exc
                raise ProviderUnavailableError(self._provider, f"{self._provider} stream broke") from exc
            if piece is None:
                self._done = True
                if not self._finished:
                    # The body ended before `[DONE]` or any finish_reason: the upstream went away mid-answer.
                    raise ProviderUnavailableError(self._provider, f"{self._provider} stream ended early")
                return None
            if block := self._events_in(piece):
                return block

    def _events_in(self, piece: bytes) -> bytes:
        """The events of the complete lines in `piece`, read and framed; a partial last line waits.

        A failure after some good events is kept for the next call, so those events leave first.
        """
        lines = (self._rest + piece if self._rest else piece).split(b"\n")
        self._rest = lines.pop()
        events: list[bytes] = []
        now = perf_counter()
        if self.timing.first_chunk is None:
            self.timing.first_chunk = now
        for line in lines:
            if line[:5] != b"data:":
                continue  # blank separators, `event:`/`id:` lines and `: keep-alive` comments carry nothing
            data = line[5:].strip()
            if data == b"[DONE]":
                self._done = self._finished = True
                break
            try:
                event = self._read(data, now)
            except ProviderError as exc:
                if not events:
                    raise
                self._pending_error = exc
                break
            if event is not None:
                events.append(event)
        return events[0] if len(events) == 1 else b"".join(events)

    def _read(self, data: bytes, now: float) -> bytes | None:
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
        for choice in reply.choices:
            if choice.finish_reason:
                self._finished = True
            if choice.delta is not None and choice.delta.content:
                self._texts.append(choice.delta.content)
                self.timing.saw_text(now)
        usage = reply.usage
        if usage is not None:
            self._usage_prompt = usage.prompt_tokens
            self._usage_completion = usage.completion_tokens
            if not reply.choices and not self._forward_usage:
                return None
        return b"data: " + data + b"\n\n"

    async def aclose(self) -> None:
        """Release the upstream connection: reused once the answer ended with `[DONE]`, else closed."""
        self._response.close(drain=self._finished)
