"""The embedded `local` provider: deterministic replies, real token counts, simulated latency and errors."""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import time
from collections.abc import AsyncIterator

from opentelemetry.trace import Span

from gateway.providers.base import Completion, ProviderUnavailableError, StreamTiming
from gateway.providers.catalog import ModelConfig
from gateway.schema import (
    ENCODER,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    Usage,
)
from gateway.tokens import count_prompt_tokens

_VOCABULARY = (
    "the gateway routes each request to a provider that serves the model and records what it cost "
    "tokens credits latency traces logs metrics flow into dashboards so operators see errors early "
    "a reply is simulated here without any network while the counts stay exact for billing"
)
_WORDS = tuple(_VOCABULARY.split())
_PUNCTUATION = (",", ".")
_TOKENS_PER_CHUNK = 4


# One token per byte value: mostly words, one in eight a punctuation mark.
_TOKEN_FOR_BYTE = tuple(
    _PUNCTUATION[value >> 7] if value % 8 == 7 else _WORDS[value % len(_WORDS)] for value in range(256)
)


def _reply_tokens(model: ModelConfig, request: ChatCompletionRequest) -> tuple[list[str], str]:
    """The reply's tokens (each a word or a mark) and its finish reason; the same prompt, the same reply."""
    digest = hashlib.sha256(model.id.encode())
    for message in request.messages:
        digest.update(message.role.encode())
        digest.update(message.text().encode())
    stream = hashlib.shake_256(digest.digest()).digest(64)
    natural = 12 + stream[0] % 40
    length = min(natural, request.output_limit or model.max_output_tokens)
    tokens = [_WORDS[stream[1] % len(_WORDS)]]
    for value in stream[2 : length + 1]:
        token = _TOKEN_FOR_BYTE[value]
        # Never two marks in a row.
        tokens.append(
            _WORDS[value % len(_WORDS)] if token in _PUNCTUATION and tokens[-1] in _PUNCTUATION else token
        )
    return tokens[:length], "length" if length < natural else "stop"


def _join(tokens: list[str], *, leading_space: bool = False) -> str:
    """Words separated by spaces, marks glued to the word before."""
    parts = []
    for index, token in enumerate(tokens):
        if token not in _PUNCTUATION and (index > 0 or leading_space):
            parts.append(" ")
        parts.append(token)
    return "".join(parts)


def _completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


class LocalProvider:
    """Serves the catalog's `local` models in-process; no network, no key."""

    kind = "local"
    times_itself = False

    def __init__(self, name: str, rng: random.Random | None = None) -> None:
        self.name = name
        self._rng = rng or random.Random()  # noqa: S311 - simulated failures, not security

    def _maybe_fail(self, model: ModelConfig) -> None:
        if model.error_rate and self._rng.random() < model.error_rate:
            raise ProviderUnavailableError(self.name, f"{self.name}: simulated upstream failure (503)")

    async def complete(
        self,
        request: ChatCompletionRequest,
        model: ModelConfig,
        span: Span,  # noqa: ARG002 - nothing leaves the process
    ) -> Completion:
        """A whole completion after the model's simulated latency."""
        if model.latency_ms:
            await asyncio.sleep(model.latency_ms / 1000)
        self._maybe_fail(model)
        tokens, finish_reason = _reply_tokens(model, request)
        prompt_tokens = count_prompt_tokens(request.messages)
        body = ChatCompletion(
            id=_completion_id(),
            created=int(time.time()),
            model=model.id,
            choices=[Choice(message=AssistantMessage(content=_join(tokens)), finish_reason=finish_reason)],
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=len(tokens),
                total_tokens=prompt_tokens + len(tokens),
            ),
        )
        return Completion(ENCODER.encode(body), prompt_tokens, len(tokens), model.id)

    async def open_stream(
        self,
        request: ChatCompletionRequest,
        model: ModelConfig,
        span: Span,  # noqa: ARG002 - nothing leaves the process
    ) -> LocalStream:
        """A stream whose failure, if simulated, happens before its first event."""
        self._maybe_fail(model)
        tokens, finish_reason = _reply_tokens(model, request)
        include_usage = request.stream_options is not None and request.stream_options.include_usage
        return LocalStream(
            model, tokens, finish_reason, count_prompt_tokens(request.messages), include_usage=include_usage
        )

    async def aclose(self) -> None:
        """Nothing to release."""


class LocalStream:
    """The local reply cut into chunks of a few tokens, the model's latency spread over them."""

    def __init__(
        self,
        model: ModelConfig,
        tokens: list[str],
        finish_reason: str,
        prompt_tokens: int,
        *,
        include_usage: bool,
    ) -> None:
        self._model = model
        self._tokens = tokens
        self._finish_reason = finish_reason
        self._include_usage = include_usage
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.response_model = model.id
        self.timing = StreamTiming()
        self.finished = False
        self._events = self.events()

    async def next_block(self) -> bytes | None:
        """The next chunk, None after the last."""
        return await anext(self._events, None)

    async def events(self) -> AsyncIterator[bytes]:
        """Role chunk, content chunks, the finish chunk and, when asked, a usage chunk."""
        chunk_id, created = _completion_id(), int(time.time())
        pieces = [
            self._tokens[i : i + _TOKENS_PER_CHUNK] for i in range(0, len(self._tokens), _TOKENS_PER_CHUNK)
        ]
        delay = self._model.latency_ms / 1000 / max(len(pieces), 1)

        def event(delta: Delta, finish_reason: str | None = None, usage: Usage | None = None) -> bytes:
            choices = [] if usage is not None else [ChunkChoice(delta=delta, finish_reason=finish_reason)]
            chunk = ChatCompletionChunk(
                id=chunk_id, created=created, model=self._model.id, choices=choices, usage=usage
            )
            return b"data: " + ENCODER.encode(chunk) + b"\n\n"

        self.timing.first_chunk = time.perf_counter()
        yield event(Delta(role="assistant", content=""))
        for index, piece in enumerate(pieces):
            if delay:
                await asyncio.sleep(delay)
            self.completion_tokens += len(piece)
            self.timing.saw_text(time.perf_counter())
            yield event(Delta(content=_join(piece, leading_space=index > 0)))
        yield event(Delta(), self._finish_reason)
        if self._include_usage:
            total = self.prompt_tokens + self.completion_tokens
            usage = Usage(
                prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens, total_tokens=total
            )
            yield event(Delta(), usage=usage)

    async def aclose(self) -> None:
        """Nothing to release."""
