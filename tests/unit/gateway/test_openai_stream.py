"""`OpenAIStream`: SSE read from upstream body pieces however they are cut, counted, relayed as they came."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from gateway.providers.base import ProviderTimeoutError, ProviderUnavailableError
from gateway.providers.catalog import ModelConfig
from gateway.providers.http_client import HttpError, ReadTimeoutError
from gateway.providers.openai import OpenAIStream
from gateway.schema import REQUEST_DECODER

MODEL = msgspec.convert({"id": "m", "prompt_price": 0, "completion_price": 0}, ModelConfig)


def chunk(content: str | None = None, *, finish: str | None = None, usage: dict | None = None) -> bytes:
    body: dict = {"id": "c", "object": "chat.completion.chunk", "model": "up-m"}
    body["choices"] = [] if usage else [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]
    if usage:
        body["usage"] = usage
    return b"data: " + msgspec.json.encode(body) + b"\n\n"


class ScriptedBody:
    """The part of `Response` a stream reads: body pieces as given, then maybe a transport error."""

    def __init__(self, pieces: list[bytes], error: HttpError | None = None) -> None:
        self.pieces = list(pieces)
        self.error = error
        self.closed_with: bool | None = None

    def piece_reader(self):
        return self.next_piece

    async def next_piece(self) -> bytes | None:
        await asyncio.sleep(0)
        if self.pieces:
            return self.pieces.pop(0)
        if self.error is not None:
            raise self.error
        return None

    def close(self, *, drain: bool = False) -> None:
        self.closed_with = drain


def request(*, include_usage: bool = False) -> object:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello there"}]}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return REQUEST_DECODER.decode(msgspec.json.encode(body))


async def relay(body: ScriptedBody, *, include_usage: bool = False) -> tuple[list[bytes], OpenAIStream]:
    stream = OpenAIStream("up", body, request(include_usage=include_usage), MODEL)  # type: ignore[arg-type]
    await stream.prime()
    blocks = []
    while (block := await stream.next_block()) is not None:
        blocks.append(block)
    await stream.aclose()
    return blocks, stream


USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
EVENTS = [
    chunk("one"),
    chunk(" two"),
    chunk(" three", finish="stop"),
    chunk(usage=USAGE),
    b"data: [DONE]\n\n",
]


class TestFraming:
    @pytest.mark.parametrize("size", [1, 7, 50, 10_000])
    def test_any_cut_of_the_body_relays_the_same_events(self, size):
        """However the body is cut into pieces, the same events are relayed, byte for byte."""
        body = b"".join(EVENTS)
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        blocks, stream = asyncio.run(relay(ScriptedBody(pieces)))
        assert b"".join(blocks) == b"".join(EVENTS[:3])  # the usage chunk nobody asked for stays upstream
        assert (stream.prompt_tokens, stream.completion_tokens, stream.response_model) == (9, 3, "up-m")

    def test_crlf_lines_comments_and_other_fields(self):
        """CRLF line ends, `: keep-alive` comments and `event:`/`id:` lines are read as SSE says."""
        body = (
            b": keep-alive\r\n\r\n"
            b"event: message\r\nid: 1\r\n"
            + chunk("hi").replace(b"\n\n", b"\r\n\r\n")
            + chunk(finish="stop")
            + b"data:[DONE]\r\n\r\n"
        )
        blocks, _ = asyncio.run(relay(ScriptedBody([body])))
        assert b"".join(blocks) == chunk("hi") + chunk(finish="stop")

    def test_events_in_one_piece_leave_together(self):
        """Events that arrived in one piece are one block (one write to the client), in order."""
        blocks, _ = asyncio.run(relay(ScriptedBody([b"".join(EVENTS[:2]), b"".join(EVENTS[2:])])))
        assert blocks == [EVENTS[0] + EVENTS[1], EVENTS[2]]

    def test_usage_forwarded_when_the_client_asked(self):
        """With stream_options.include_usage the usage chunk is relayed as it came."""
        blocks, _ = asyncio.run(relay(ScriptedBody(EVENTS), include_usage=True))
        assert b"".join(blocks) == b"".join(EVENTS[:4])

    def test_counts_the_text_when_no_usage_arrives(self):
        """Without a usage chunk, completion tokens are counted from the relayed text."""
        blocks, stream = asyncio.run(relay(ScriptedBody([*EVENTS[:3], b"data: [DONE]\n\n"])))
        assert len(blocks) == 3
        assert stream.completion_tokens == 3  # "one", "two", "three"

    def test_the_prompt_is_counted_only_without_the_upstreams_usage(self, monkeypatch):
        """The upstream's usage is charged as it came, with no count of our own (a 2,000-token prompt costs
        ~760 µs to count, and the reservation has counted it already); without usage, counted once."""
        counted: list[int] = []

        def count(messages):
            counted.append(len(messages))
            return 5

        monkeypatch.setattr("gateway.providers.openai.count_prompt_tokens", count)
        _, stream = asyncio.run(relay(ScriptedBody(EVENTS)))
        assert (stream.prompt_tokens, stream.prompt_tokens) == (9, 9)
        assert counted == []
        _, stream = asyncio.run(relay(ScriptedBody([*EVENTS[:3], b"data: [DONE]\n\n"])))
        assert (stream.prompt_tokens, stream.prompt_tokens, stream.prompt_tokens) == (5, 5, 5)
        assert counted == [1]

    def test_finished_stream_drains_its_connection(self):
        """A stream that reached [DONE] releases its connection for reuse (drain), a broken one does not."""
        body = ScriptedBody(EVENTS)
        asyncio.run(relay(body))
        assert body.closed_with is True


class TestFailures:
    def test_malformed_chunk_after_good_ones(self):
        """Good events that came with a malformed one are relayed first; then the stream fails (502)."""
        body = ScriptedBody([EVENTS[0] + b"data: {not json\n\n"])

        async def scenario() -> list[bytes]:
            stream = OpenAIStream("up", body, request(), MODEL)  # type: ignore[arg-type]
            await stream.prime()
            got: list[bytes] = []

            async def read_all() -> None:
                while (block := await stream.next_block()) is not None:
                    got.append(block)

            with pytest.raises(ProviderUnavailableError, match="malformed chunk"):
                await read_all()
            return got

        assert asyncio.run(scenario()) == [EVENTS[0]]

    def test_body_ending_before_done(self):
        """A body that ends with no [DONE] and no finish reason is an upstream that went away."""
        with pytest.raises(ProviderUnavailableError, match="ended early"):
            asyncio.run(relay(ScriptedBody([EVENTS[0]])))

    def test_stall_is_a_timeout(self):
        """The client's read timeout mid-stream is a 504-type failure."""
        with pytest.raises(ProviderTimeoutError, match="stalled"):
            asyncio.run(relay(ScriptedBody([EVENTS[0]], ReadTimeoutError("no byte"))))
