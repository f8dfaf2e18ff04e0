"""The chat route's answers as plain ASGI apps: a JSON body, and an SSE stream that ends if the client goes.

Litestar's `Response` builds a header object, merges layers' headers and cookies and renders the body
again for every answer, and its `Stream` runs each stream in an anyio task group (a task and two cancel
scopes) to notice a client that leaves. The chat route returns bytes it already has, so it hands Litestar
these instead (a handler annotated `-> ASGIApp` is passed through as it is): measured with
`bench/upstream_instructions.py`, see BENCHMARKS.md "Proxying an OpenAI-compatible upstream".
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from litestar.types import Receive, ReceiveMessage, Scope, Send

_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class JsonAnswer:
    """A complete JSON body, sent in two ASGI messages."""

    __slots__ = ("_body", "_headers", "_status")

    def __init__(self, body: bytes, extra_headers: list[tuple[bytes, bytes]], status: int = 200) -> None:
        self._body = body
        self._status = status
        self._headers = [_JSON, (b"content-length", b"%d" % len(body)), *extra_headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002 - ASGI's signature
        """Send the head and the body."""
        await send({"type": "http.response.start", "status": self._status, "headers": self._headers})
        await send({"type": "http.response.body", "body": self._body, "more_body": False})


class Relay(Protocol):
    """Where an `EventStream` takes its blocks from (`gateway.inference.StreamRelay`)."""

    async def next_block(self) -> bytes | None:
        """The next block to send; None at the end."""
        ...

    async def close(self, *, interrupted: bool) -> None:
        """Called once, after the last block or when the stream stops early (`interrupted`)."""
        ...


class EventStream:
    """`text/event-stream` from a relay's blocks; a client that disconnects stops the relay.

    One plain task waits on `receive` for the disconnect and cancels the streaming task when it comes; that
    cancellation is ours, so it is taken back (`Task.uncancel`) and the app returns normally, as after a
    complete stream: the relay is closed (credits settled, the inference line written) either way.
    """

    __slots__ = ("_headers", "_relay")

    def __init__(self, relay: Relay, extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self._relay = relay
        self._headers = [*_SSE_HEADERS, *extra_headers] if extra_headers else _SSE_HEADERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002 - ASGI's signature
        """Send the head, then each block as it comes, then the end of the body."""
        await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - ASGI apps run in a task
        left = False

        def on_message(message: asyncio.Future[ReceiveMessage]) -> None:
            nonlocal left
            if message.cancelled() or message.exception() is not None:
                return
            if message.result()["type"] == "http.disconnect":
                left = True
                task.cancel()

        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(on_message)
        relay = self._relay
        interrupted = True
        try:
            while (block := await relay.next_block()) is not None:
                await send({"type": "http.response.body", "body": block, "more_body": True})
            interrupted = False
        except asyncio.CancelledError:
            if not left:
                raise
            task.uncancel()
            return
        finally:
            watcher.remove_done_callback(on_message)
            watcher.cancel()
            await relay.close(interrupted=interrupted)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
