"""The chat route's ASGI answers: what they send, and how a stream ends when the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.responses import EventStream, JsonAnswer


class Client:
    """The server side of one ASGI exchange: records sent messages; `leave()` makes receive disconnect."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self._left = asyncio.Event()

    async def receive(self) -> dict:
        await self._left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)
        await asyncio.sleep(0)

    def leave(self) -> None:
        self._left.set()


class TestJsonAnswer:
    def test_head_and_body(self):
        """Status, JSON content type, exact length and the extra headers, then the whole body."""
        client = Client()
        asyncio.run(
            JsonAnswer(b'{"a": 1}', [(b"x-gatewayz-cache", b"miss")])({}, client.receive, client.send)
        )
        start, body = client.sent
        assert start["status"] == 200
        assert start["headers"] == [
            (b"content-type", b"application/json"),
            (b"content-length", b"8"),
            (b"x-gatewayz-cache", b"miss"),
        ]
        assert body == {"type": "http.response.body", "body": b'{"a": 1}', "more_body": False}


class TestEventStream:
    def test_sends_every_block_then_ends_the_body(self):
        """An SSE head, each block as its own body message, then an empty final one."""

        async def events() -> AsyncIterator[bytes]:
            yield b"data: 1\n\n"
            yield b"data: 2\n\n"

        client = Client()
        asyncio.run(EventStream(events())({}, client.receive, client.send))
        assert client.sent[0]["headers"][0] == (b"content-type", b"text/event-stream")
        assert [m["body"] for m in client.sent[1:]] == [b"data: 1\n\n", b"data: 2\n\n", b""]
        assert client.sent[-1]["more_body"] is False

    def test_client_leaving_stops_the_stream_cleanly(self):
        """A disconnect while waiting for the upstream ends the iterator (its clean-up runs, seeing the
        cancellation) and the app returns normally: no error for the server to log."""
        seen: list[str] = []

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b"data: first\n\n"
                await asyncio.sleep(30)  # the upstream is slow; the client gives up meanwhile
                yield b"never"
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            finally:
                seen.append("cleaned up")

        async def scenario() -> None:
            client = Client()
            app = asyncio.ensure_future(EventStream(events())({}, client.receive, client.send))
            await asyncio.sleep(0.05)
            client.leave()
            await asyncio.wait_for(app, 2)  # returns, does not raise
            assert [m.get("body") for m in client.sent[1:]] == [b"data: first\n\n"]
            assert not app.cancelled()

        asyncio.run(scenario())
        assert seen == ["cancelled", "cleaned up"]

    def test_a_cancellation_from_elsewhere_propagates(self):
        """Server shutdown cancelling the task is not swallowed."""

        async def events() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            await asyncio.sleep(30)
            yield b"never"

        async def scenario() -> None:
            client = Client()
            app = asyncio.ensure_future(EventStream(events())({}, client.receive, client.send))
            await asyncio.sleep(0.05)
            app.cancel()
            with pytest.raises(asyncio.CancelledError):
                await app

        asyncio.run(scenario())
