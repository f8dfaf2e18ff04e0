"""OpenAI chat-completion wire types, decoded and validated by msgspec (a bad body names its field)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
Temperature = Annotated[float, msgspec.Meta(ge=0.0, le=2.0)]
Penalty = Annotated[float, msgspec.Meta(ge=-2.0, le=2.0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One chat message; content is text or a list of content parts (only text parts are counted)."""

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: msgspec.Raw | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text, text parts joined."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return " ".join(str(part.get("text", "")) for part in self.content if isinstance(part, dict))


class StreamOptions(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """`stream_options`: whether the last chunk carries `usage`."""

    include_usage: bool = False


class ChatCompletionRequest(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """`POST /v1/chat/completions` body: the OpenAI parameters the gateway knows, nothing else."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=1)] | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    stop: str | list[str] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    seed: int | None = None
    user: str | None = None
    response_format: msgspec.Raw | None = None
    tools: msgspec.Raw | None = None
    tool_choice: msgspec.Raw | None = None
    parallel_tool_calls: bool | None = None

    @property
    def output_limit(self) -> int | None:
        """The completion token limit the client asked for, if any."""
        return self.max_completion_tokens or self.max_tokens


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts of one completion."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(msgspec.Struct, frozen=True, kw_only=True):
    """The assistant's reply in a non-streaming choice."""

    role: str = "assistant"
    content: str | None = None


class Choice(msgspec.Struct, frozen=True, kw_only=True):
    """One non-streaming choice."""

    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = "stop"


class ChatCompletion(msgspec.Struct, frozen=True, kw_only=True):
    """A non-streaming response (`object: chat.completion`)."""

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class Delta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The incremental content of a streamed choice."""

    role: str | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct, frozen=True, kw_only=True):
    """One streamed choice."""

    index: int = 0
    delta: Delta = msgspec.field(default_factory=Delta)
    finish_reason: str | None = None


class ChatCompletionChunk(msgspec.Struct, frozen=True, kw_only=True):
    """One SSE event of a streamed response (`object: chat.completion.chunk`)."""

    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


def describe_validation_error(exc: msgspec.MsgspecError) -> str:
    """`Expected int >= 1, got 0 - at $.max_tokens` → `max_tokens: expected int >= 1, got 0`."""
    reason, separator, where = str(exc).rpartition(" - at `$")
    if not separator:
        reason, where = str(exc), ""
    field = where.rstrip("`").lstrip(".")
    if unknown := _UNKNOWN_FIELD.match(reason):
        field = f"{field}.{unknown[1]}" if field else unknown[1]
        reason = "unknown field"
    reason = reason.replace("`", "")
    if reason[1:2].islower():  # "Expected ..." reads on after a colon; "JSON ..." keeps its capitals
        reason = reason[:1].lower() + reason[1:]
    return f"{field}: {reason}" if field else f"invalid request body: {reason}"


_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(.+)`")
REQUEST_DECODER = msgspec.json.Decoder(ChatCompletionRequest)
"""Decodes and validates request bodies."""
ENCODER = msgspec.json.Encoder()
"""Encodes responses and upstream requests."""
