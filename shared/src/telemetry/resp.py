"""A lean Redis client for the per-request script calls: one pipelined RESP2 connection on asyncio transports.

Why not redis-py for these: measured on loopback here (`uv run python bench/redis_clients.py`, one uvloop
loop pinned to one core, redis-server on the other, the gateway's rate-limit script; BENCHMARKS.md, "Key
limits"), redis-py's asyncio client spends ~270 µs of client CPU on one EVALSHA at a time and ~235 µs at 16
at once (~270 / ~205 µs with `hiredis` installed, so its reply parser is not where the time goes), where this
client spends ~82 / ~62 µs, socket calls and the event loop's wake-up included: 3.3-3.8x less. A gateway
request with a rate-limited key makes one script call, and the whole request costs ~650 µs. This client
writes the command with one `bytes` join and parses the reply from the socket buffer in `data_received`. It
also keeps one connection, pipelined, where redis-py's pool opens one connection per concurrent command (200
at once under a burst, each with the connect timeout to meet).

What it does, and nothing more: `EVALSHA` of scripts it was given (falling back to `EVAL` once when Redis
answers NOSCRIPT, e.g. after a restart or `SCRIPT FLUSH`), replies in order on one connection, `AUTH` and
`SELECT` from the URL (redis-py's `parse_url`: `redis://`, `rediss://` with the system's CA roots, `unix://`),
a connect timeout and a per-call timeout. A call that times out closes the connection (replies could no longer
be matched to calls) and fails every call still waiting on it; the next call connects again. Errors are
redis-py's exception classes, so `telemetry.shared_redis.REDIS_ERRORS` covers them. Everything else the
services send to Redis still goes through redis-py (`SharedRedis.client`).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from typing import Any

from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Reply = int | bytes | list[Any] | None


class _Incomplete(Exception):  # noqa: N818 - control flow, never raised out of this module
    """The buffer ends inside a reply: wait for more bytes."""


def _parse(buffer: bytearray, at: int) -> tuple[Reply | ResponseError, int]:  # noqa: C901, PLR0911 - one branch per RESP type
    """One RESP2 reply from `buffer` at `at`: (value, where the next reply starts)."""
    end = buffer.find(b"\r\n", at)
    if end < 0:
        raise _Incomplete
    kind, line = buffer[at], bytes(buffer[at + 1 : end])
    at = end + 2
    if kind == 0x3A:  # ':' integer
        return int(line), at
    if kind == 0x24:  # '$' bulk string
        length = int(line)
        if length < 0:
            return None, at
        if len(buffer) < at + length + 2:
            raise _Incomplete
        return bytes(buffer[at : at + length]), at + length + 2
    if kind == 0x2A:  # '*' array
        count = int(line)
        if count < 0:
            return None, at
        items = []
        for _ in range(count):
            item, at = _parse(buffer, at)
            items.append(item)
        return items, at
    if kind == 0x2B:  # '+' simple string
        return line, at
    if kind == 0x2D:  # '-' error
        return ResponseError(line.decode(errors="replace")), at
    raise RedisConnectionError(f"unexpected RESP reply type {chr(kind)!r}")


def command(*words: bytes | str | float) -> bytes:
    """A command as a RESP array of bulk strings."""
    encoded = [word if isinstance(word, bytes) else str(word).encode() for word in words]
    return b"*%d\r\n" % len(encoded) + b"".join([b"$%d\r\n%b\r\n" % (len(data), data) for data in encoded])


class _Protocol(asyncio.Protocol):
    """Replies resolve waiting futures in order."""

    def __init__(self) -> None:
        self.waiting: deque[asyncio.Future[Reply]] = deque()
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        at = 0
        try:
            while at < len(self.buffer) and self.waiting:
                value, at = _parse(self.buffer, at)
                future = self.waiting.popleft()
                if not future.done():
                    if isinstance(value, ResponseError):
                        future.set_exception(value)
                    else:
                        future.set_result(value)
        except _Incomplete:
            pass
        except RedisConnectionError as exc:
            self.fail(exc)
            return
        del self.buffer[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def fail(self, exc: Exception) -> None:
        """Fail every waiting call and close."""
        self.closed = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


class Script:
    """A Lua script called by its SHA-1 (the source is sent once if Redis does not have it)."""

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest().encode()  # noqa: S324 - Redis names scripts by SHA-1


class RespClient:
    """One pipelined connection to the Redis at `url`; used from one event loop."""

    def __init__(self, url: str, timeout: float = 0.5) -> None:
        options = parse_url(url)  # type: ignore[no-untyped-call]
        self._path: str | None = options.get("path")
        self._host: str = options.get("host", "localhost")
        self._port: int = int(options.get("port") or 6379)
        self._tls = url.startswith("rediss://")
        self._setup: list[bytes] = []
        password, username = options.get("password"), options.get("username")
        if password:
            self._setup.append(command("AUTH", *([username] if username else []), password))
        if int(options.get("db") or 0):
            self._setup.append(command("SELECT", int(options["db"])))
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def _connection(self) -> _Protocol:
        if self._protocol is not None and not self._protocol.closed:
            return self._protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                if self._path is not None:
                    _, protocol = await loop.create_unix_connection(_Protocol, self._path)
                else:
                    context = ssl.create_default_context() if self._tls else None
                    _, protocol = await loop.create_connection(_Protocol, self._host, self._port, ssl=context)
                for setup in self._setup:  # AUTH, SELECT: answered before anything else
                    try:
                        await self._send(protocol, setup)
                    except ResponseError as exc:
                        protocol.fail(RedisConnectionError(f"Redis refused the connection: {exc}"))
                        raise RedisConnectionError(f"Redis refused the connection: {exc}") from None
        except TimeoutError as exc:
            raise RedisTimeoutError("timed out connecting to Redis") from exc
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        self._protocol = protocol
        return protocol

    def _send(self, protocol: _Protocol, data: bytes) -> asyncio.Future[Reply]:
        # Written at once: deferring to batch the commands of a loop iteration (call_soon) measured worse,
        # as the write then waits behind every other request's step in the ready queue (~35 % fewer req/s).
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        protocol.waiting.append(future)
        assert protocol.transport is not None  # noqa: S101 - set in connection_made
        protocol.transport.write(data)
        return future

    async def call(self, data: bytes) -> Reply:
        """Send one encoded command and wait (at most `timeout`) for its reply."""
        protocol = await self._connection()
        future = self._send(protocol, data)
        timer = asyncio.get_running_loop().call_later(self.timeout, _expire, protocol, future)
        try:
            return await future
        finally:
            timer.cancel()

    async def evalsha(self, script: Script, keys: list[str], args: list[Any]) -> Reply:
        """Run `script` with `keys` and `args`; its reply (a Redis error is `ResponseError`)."""
        words = [len(keys), *keys, *args]
        try:
            return await self.call(command(b"EVALSHA", script.sha, *words))
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.call(command(b"EVAL", script.source, *words))

    def close(self) -> None:
        """Close the connection (waiting calls fail)."""
        if self._protocol is not None:
            self._protocol.fail(RedisConnectionError("client closed"))
            self._protocol = None


def _expire(protocol: _Protocol, future: asyncio.Future[Reply]) -> None:
    """A call timed out: its reply may still come, so no later reply can be trusted; start afresh."""
    if not future.done():
        protocol.fail(RedisTimeoutError("Redis did not answer in time"))
