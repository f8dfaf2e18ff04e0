"""A fake OpenAI-compatible upstream served for real over loopback: raw asyncio HTTP/1.1 in a thread.

The upstream model name in the request picks the behaviour, so one catalog can exercise every path.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import msgspec

from support.processes import free_port

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
PACED_FIRST_TEXT = 0.4
"""`up-paced`: seconds from the request to its first text (TTFT lands in the (0.3, 0.5] bucket)."""
PACED_TEXTS = 5
PACED_INTERVAL = 0.08
"""Seconds between its texts: TPOT = 4 x 0.08 / (5 - 1) = 0.08, in the (0.075, 0.1] bucket."""


def _completion(model: str) -> bytes:
    return msgspec.json.encode(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1,
            "model": f"{model}-2025",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            ],
            "usage": USAGE,
        }
    )


def _chunk(model: str, content: str | None, *, usage: dict[str, int] | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    body = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": f"{model}-2025",
        "choices": choices,
    }
    if usage:
        body["usage"] = usage
    return b"data: " + msgspec.json.encode(body) + b"\n\n"


class FakeUpstream:
    """Serves `POST /v1/chat/completions`; records every request it received."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.requests: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> FakeUpstream:
        self._thread.start()
        self._started.wait(5)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = msgspec.json.decode(body) if body else {}
                self.requests.append({"path": lines[0].split(" ")[1], "headers": headers, "body": request})
                if not await self._respond(request, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _respond(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> bool:  # noqa: PLR0911
        """Answer one request; False when the connection must close."""
        model = request.get("model", "")
        if model == "up-slow":
            await asyncio.sleep(2)
        if model in {"up-500", "up-slow"}:
            return self._send(writer, 500, b'{"error": {"message": "upstream exploded"}}')
        if model == "up-429":
            return self._send(writer, 429, b'{"error": {"message": "slow down"}}')
        if model == "up-400":
            return self._send(writer, 400, b'{"error": {"message": "context too long"}}')
        if model == "up-bad-json":
            return self._send(writer, 200, b'{"choices": [ this is not json')
        if request.get("stream") and model == "up-paced":
            return await self._paced(model, writer)
        if request.get("stream"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
            for word in ("one", " two", " three"):
                writer.write(_chunk(model, word))
                await writer.drain()
                await asyncio.sleep(0.01)
                if model == "up-stream-break":
                    writer.transport.abort()
                    return False
            writer.write(_chunk(model, None, usage=USAGE) + b"data: [DONE]\n\n")
            await writer.drain()
            return False
        return self._send(writer, 200, _completion(model))

    async def _paced(self, model: str, writer: asyncio.StreamWriter) -> bool:
        """A stream with known timing: the role chunk at once, the first text after PACED_FIRST_TEXT
        seconds, then PACED_TEXTS - 1 more PACED_INTERVAL apart; usage says PACED_TEXTS completion tokens."""
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        writer.write(_chunk(model, ""))
        await writer.drain()
        await asyncio.sleep(PACED_FIRST_TEXT)
        for index in range(PACED_TEXTS):
            if index:
                await asyncio.sleep(PACED_INTERVAL)
            writer.write(_chunk(model, f" w{index}"))
            await writer.drain()
        usage = {"prompt_tokens": 11, "completion_tokens": PACED_TEXTS, "total_tokens": 11 + PACED_TEXTS}
        writer.write(_chunk(model, None, usage=usage) + b"data: [DONE]\n\n")
        await writer.drain()
        return False

    @staticmethod
    def _send(writer: asyncio.StreamWriter, status: int, body: bytes) -> bool:
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n".encode()
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        return True
