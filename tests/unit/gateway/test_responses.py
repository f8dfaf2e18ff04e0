"""The chat route's ASGI answers: what they send, and how a stream ends when the client leaves."""

from __future__ import annotations

import asyncio

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


class ScriptedRelay:
    """A relay that hands out `blocks`, then (with `stall`) waits as a slow upstream; records its close."""

    def __init__(self, blocks: list[bytes], *, stall: bool = False) -> None:
        self.blocks = list(blocks)
        self.stall = stall
        self.seen: list[str] = []

    async def next_block(self) -> bytes | None:
        if self.blocks:
            return self.blocks.pop(0)
        if self.stall:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.seen.append("cancelled")
                raise
        return None

    async def close(self, *, interrupted: bool) -> None:
        await asyncio.sleep(0)  # closing may await (settlement), also after a cancellation
        self.seen.append(f"closed interrupted={interrupted}")


class TestEventStream:
    def test_sends_every_block_then_ends_the_body(self):
        """An SSE head, each block as its own body message, an empty final one; the relay closed once."""
        relay = ScriptedRelay([b"data: 1\n\n", b"data: 2\n\n"])
        client = Client()
        asyncio.run(EventStream(relay)({}, client.receive, client.send))
        assert client.sent[0]["headers"][0] == (b"content-type", b"text/event-stream")
        assert [m["body"] for m in client.sent[1:]] == [b"data: 1\n\n", b"data: 2\n\n", b""]
        assert client.sent[-1]["more_body"] is False
        assert relay.seen == ["closed interrupted=False"]

    def test_client_leaving_stops_the_stream_cleanly(self):
        """A disconnect while waiting for the upstream cancels the wait, closes the relay as interrupted,
        and the app returns normally: no error for the server to log."""
        relay = ScriptedRelay([b"data: first\n\n"], stall=True)

        async def scenario() -> None:
            client = Client()
            app = asyncio.ensure_future(EventStream(relay)({}, client.receive, client.send))
            await asyncio.sleep(0.05)
            client.leave()
            await asyncio.wait_for(app, 2)  # returns, does not raise
            assert [m.get("body") for m in client.sent[1:]] == [b"data: first\n\n"]
            assert not app.cancelled()

        asyncio.run(scenario())
        assert relay.seen == ["cancelled", "closed interrupted=True"]

    def test_a_cancellation_from_elsewhere_propagates(self):
        """Server shutdown cancelling the task is not swallowed; the relay is still closed."""
        relay = ScriptedRelay([b"data: first\n\n"], stall=True)

        async def scenario() -> None:
            client = Client()
            app = asyncio.ensure_future(EventStream(relay)({}, client.receive, client.send))
            await asyncio.sleep(0.05)
            app.cancel()
            with pytest.raises(asyncio.CancelledError):
                await app

        asyncio.run(scenario())
        assert relay.seen == ["cancelled", "closed interrupted=True"]
