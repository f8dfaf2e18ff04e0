"""A minimal, fast OpenAI-compatible upstream for benchmarks: `POST /v1/chat/completions`, JSON or SSE.

    python bench/openai_upstream.py PORT [--chunks 20] [--chunk-interval-ms 1]

Raw asyncio on uvloop with a hand-rolled HTTP/1.1 reader (keep-alive, Content-Length bodies): the point is
to cost as little CPU as possible, so the gateway in front of it is what the benchmark measures. A
non-streaming request gets one completion with `usage`; `"stream": true` gets `--chunks` content chunks,
each its own write (so they travel as separate segments, as a real model's tokens do), a finish chunk, a
usage chunk when `stream_options.include_usage` asks for it, then `data: [DONE]`, as chunked transfer
encoding the way OpenAI's API answers. `--chunk-interval-ms` spaces the chunks as a model's tokens are
(0: as fast as the loop goes, so a busy reader gets several at once).
"""

from __future__ import annotations

import argparse
import asyncio
import re
from typing import ClassVar

import msgspec
import uvloop


class _Options(msgspec.Struct):
    include_usage: bool = False


class _Request(msgspec.Struct):
    model: str = "bench"
    stream: bool = False
    stream_options: _Options | None = None


_DECODER = msgspec.json.Decoder(_Request)
_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
_WORDS = ("The", " gateway", " is", " fast", " today", ",", " and", " so", " is", " this")


def _completion(model: str) -> bytes:
    return msgspec.json.encode(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1764000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(_WORDS) + " upstream."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 14, "completion_tokens": 12, "total_tokens": 26},
        }
    )


def _chunk(model: str, delta: dict[str, str], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1764000000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return _framed(b"data: " + msgspec.json.encode(body) + b"\n\n")


def _framed(data: bytes) -> bytes:
    """One chunk of HTTP/1.1 chunked transfer encoding."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class Upstream(asyncio.Protocol):
    """One connection: requests answered in order, kept alive."""

    replies: ClassVar[dict[str, bytes]] = {}
    streams: ClassVar[dict[tuple[str, bool], list[bytes]]] = {}
    chunks = 20
    interval = 0.0

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            match = _LENGTH.search(self._buffer, 0, end + 2)
            length = int(match.group(1)) if match else 0
            if len(self._buffer) < end + 4 + length:
                return
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            self._queue.put_nowait(body)

    async def _serve(self) -> None:
        transport = self._transport
        assert transport is not None
        while True:
            body = await self._queue.get()
            try:
                request = _DECODER.decode(body)
            except msgspec.DecodeError:
                transport.write(_BAD_REQUEST)
                continue
            if not request.stream:
                reply = self.replies.get(request.model)
                if reply is None:
                    payload = _completion(request.model)
                    reply = self.replies[request.model] = (
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        + f"content-length: {len(payload)}\r\n\r\n".encode()
                        + payload
                    )
                transport.write(reply)
                continue
            usage = request.stream_options is not None and request.stream_options.include_usage
            parts = self.streams.get((request.model, usage))
            if parts is None:
                parts = self.streams[(request.model, usage)] = self._stream_parts(request.model, usage)
            for part in parts:
                transport.write(part)
                await asyncio.sleep(self.interval)  # one segment per chunk, as a model streams

    def _stream_parts(self, model: str, usage: bool) -> list[bytes]:
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        parts = [head + _chunk(model, {"role": "assistant", "content": ""})]
        parts += [_chunk(model, {"content": _WORDS[i % len(_WORDS)]}) for i in range(self.chunks)]
        tail = _chunk(model, {}, "stop")
        if usage:
            body = {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": 1764000000,
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": 14,
                    "completion_tokens": self.chunks,
                    "total_tokens": 14 + self.chunks,
                },
            }
            tail += _framed(b"data: " + msgspec.json.encode(body) + b"\n\n")
        tail += _framed(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        parts.append(tail)
        return parts


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-interval-ms", type=float, default=0.0)
    args = parser.parse_args()
    Upstream.chunks = args.chunks
    Upstream.interval = args.chunk_interval_ms / 1000
    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
