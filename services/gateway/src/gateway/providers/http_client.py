"""A lean pooled HTTP/1.1 client for the upstream calls: asyncio transports and httptools' parser.

Why not httpx or aiohttp: measured side by side on this path (`bench/http_clients.py`, one pooled client
POSTing to `bench/openai_upstream.py` on loopback, uvloop, CPU 0), httpx cost ~1,400 µs of CPU per call at
1 connection and ~3,900 µs at 32 (its pool scans every connection, asking each socket whether it is
readable, on every request), aiohttp ~280 µs and ~250 µs; this client ~72 µs and ~37 µs (3 rounds on an
idle machine; figures and the command in BENCHMARKS.md, "The upstream HTTP client"). The gateway's whole
budget is 500 µs a request.

What it does, and nothing more: one request at a time per connection (no pipelining); connections kept
alive per origin and reused most-recent-first; idle ones closed after `keepalive_seconds` (a NAT or load
balancer may drop them silently) or as soon as the server closes them (the transport says so, nothing is
polled); a reused connection that the server closed just as the request went out (no byte of answer) is
retried once on a fresh one, the race every keep-alive client has; `Content-Length`, chunked and
close-delimited bodies, gzip/deflate decoded when a server compresses despite `Accept-Encoding: identity`;
TLS with certifi's roots; a connect timeout, and a read timeout that fires when no byte arrives for that
long (waiting for the head, or mid-body), armed with one timer per exchange rather than one per read;
back-pressure when a streamed body is read slower than it arrives. No redirects, cookies or proxies
(`HTTP(S)_PROXY` is not read): upstreams are API endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import certifi
import httptools

_PAUSE_BYTES = 256 * 1024
"""A streamed body buffered beyond this pauses reading from the socket until the reader catches up."""
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTENT_ENCODING = re.compile(rb"(?i)\r\ncontent-encoding[ \t]*:")
_HEADER = re.compile(rb"\r\n([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*:[ \t]*([^\r\n]*)")


class HttpError(Exception):
    """The exchange failed; the class name says how (it appears in the provider's error message)."""


class ConnectError(HttpError):
    """The connection could not be made (refused, unresolvable, TLS handshake failed)."""


class ConnectTimeoutError(HttpError):
    """The connection was not made within the connect timeout."""


class ReadTimeoutError(HttpError):
    """No byte of the answer arrived within the read timeout."""


class TotalTimeoutError(HttpError):
    """The answer was not complete within the total timeout."""


class RemoteProtocolError(HttpError):
    """The server closed the connection mid-answer, or sent something that is not HTTP/1.1."""


class BodyTooLargeError(HttpError):
    """A body read whole was larger than the bound."""


class Endpoint:
    """A parsed URL: where to connect and what to ask for."""

    __slots__ = ("host", "origin", "port", "scheme", "target")

    def __init__(self, scheme: str, host: str, port: int, target: str) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.target = target
        """The request target: path and query."""
        self.origin = f"{scheme}://{self.authority}"
        """`scheme://host[:port]`: connections are pooled by it."""

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """`http(s)://host[:port]/path?query`; anything else is a ValueError."""
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme], target)

    @property
    def authority(self) -> str:
        """The `Host` header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def request_head(self, method: str, headers: dict[str, str]) -> bytes:
        """The request line and fixed headers, to be followed by per-request headers and a blank line."""
        lines = [f"{method} {self.target} HTTP/1.1", f"Host: {self.authority}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        for line in lines:
            if "\r" in line or "\n" in line:
                raise ValueError("header values may not contain line breaks")
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the state of its current exchange (there is at most one)."""

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._exchange_open = False
        self._head_waiter: asyncio.Future[None] | None = None
        self._body_waiter: asyncio.Future[None] | None = None
        self._error: HttpError | None = None
        self.status = 0
        self._head = b""
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self.complete = False
        self.keep_alive = False
        self._draining = False
        self._received = 0
        self._read_timeout = 0.0
        self._deadline = math.inf
        self._last_data = 0.0
        self._watchdog: asyncio.TimerHandle | None = None

    # Protocol callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._exchange_open:
            # Bytes nobody asked for: the connection's state is unknown, so it is not reused.
            self.close()
            return
        if not self.status:
            self._head += data  # headers are read from these bytes when asked for, not one callback each
        self._received += len(data)
        self._last_data = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(RemoteProtocolError(f"malformed HTTP answer: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        if self._exchange_open and self.status and not self.complete and self._close_delimited():
            self.on_message_complete()  # a close-delimited body ends here
        self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - the cause does not matter
        self.closed = True
        self._pool.forget(self)
        if self._exchange_open and not self.complete:
            self._fail(RemoteProtocolError("server closed the connection mid-answer"))

    def pause_writing(self) -> None:
        """The request body sits in the transport's buffer; nothing else to do."""

    def resume_writing(self) -> None:
        """See pause_writing."""

    # httptools callbacks (no `on_header`: a callback per header costs more than reading them when asked).

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The answer's headers, names lower-cased, in order."""
        head = self._head
        end = head.find(b"\r\n\r\n")
        return [(name.lower(), value.strip()) for name, value in _HEADER.findall(head, 0, end + 2)]

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header, by its lower-case name."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def _close_delimited(self) -> bool:
        """Neither Content-Length nor Transfer-Encoding: the body ends when the connection does."""
        return self.header(b"content-length") is None and self.header(b"transfer-encoding") is None

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        if not body or self._draining:
            return
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > _PAUSE_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake_body()

    def on_message_complete(self) -> None:
        self.complete = True
        self._stop_watchdog()
        if self._draining:
            self.finish()
        else:
            self._wake_body()

    # The exchange.

    def send(self, data: bytes, read_timeout: float, deadline: float) -> None:
        """Write the whole request and arm the timeouts (`deadline` in loop time, or infinity)."""
        assert self.transport is not None  # noqa: S101 - connected before it is handed out
        self._exchange_open = True
        self._head_waiter = self._loop.create_future()
        self._read_timeout = read_timeout
        self._deadline = deadline
        now = self._last_data = self._loop.time()
        self._watchdog = self._loop.call_later(min(read_timeout, deadline - now), self._check_stall)
        self.transport.write(data)

    def end_total_timeout(self) -> None:
        """From now on only the read timeout applies (the watchdog picks this up when it next fires)."""
        self._deadline = math.inf

    async def wait_head(self) -> None:
        """Until the status line and headers have arrived."""
        if self.status == 0 and self._error is None:
            assert self._head_waiter is not None  # noqa: S101 - send() comes first
            await self._head_waiter
        if self._error is not None:
            raise self._error

    @property
    def head(self) -> bytes:
        """The bytes received up to the end of the headers (and maybe some body)."""
        return self._head

    @property
    def answered_nothing(self) -> bool:
        """Not one byte of answer arrived (so the server did not process the request on this connection)."""
        return self._received == 0

    async def next_body(self) -> bytes | None:
        """What arrived of the body since the last call (all of it, in one piece), None once complete."""
        body = self._body
        while not body:
            if self._error is not None:
                raise self._error
            if self.complete:
                return None
            self._body_waiter = self._loop.create_future()
            try:
                await self._body_waiter
            finally:
                self._body_waiter = None
        if len(body) == 1:
            piece = body.popleft()
            self._buffered -= len(piece)
        else:  # several chunks came in together: one piece, so they are handled (and relayed) once
            piece = b"".join(body)
            body.clear()
            self._buffered = 0
        if self._paused and self._buffered <= _PAUSE_BYTES // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return piece

    def take_whole_body(self, limit: int) -> bytes | None:
        """The body at once when all of it has arrived (None otherwise); BodyTooLargeError over `limit`."""
        if not self.complete or self._error is not None:
            return None
        if self._buffered > limit:
            raise BodyTooLargeError(f"body larger than {limit} bytes")
        body = self._body
        whole = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        return whole

    def drain(self) -> None:
        """The caller is done but the body is not over: discard the rest, then go back to the pool.

        Bounded by the read timeout; an error or a close on the way closes the connection instead.
        """
        if self.complete or self._error is not None or self.closed:
            self.finish()
            return
        self._draining = True
        self._body.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def finish(self) -> None:
        """The caller is done: back to the pool when the answer was read whole and may be reused."""
        self._stop_watchdog()
        reusable = self.complete and self.keep_alive and not self.closed and self._error is None
        self._exchange_open = False
        self._draining = False
        self._head_waiter = None
        self.status = 0
        self._head = b""
        self._body.clear()
        self._buffered = 0
        self.complete = False
        self._received = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        if reusable:
            self.reused = True
            self._pool.release(self)
        else:
            self.close()

    def _check_stall(self) -> None:
        self._watchdog = None
        if not self._exchange_open or self.complete:
            return
        now = self._loop.time()
        idle_limit = self._last_data + self._read_timeout
        limit = min(idle_limit, self._deadline)
        if now < limit:
            self._watchdog = self._loop.call_later(limit - now, self._check_stall)
            return
        if self._deadline <= idle_limit:
            self._fail(TotalTimeoutError("the answer was not complete in time"))
        else:
            self._fail(ReadTimeoutError(f"no byte of answer for {self._read_timeout:g} s"))
        self.close()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _fail(self, error: HttpError) -> None:
        if self._error is None:
            self._error = error
        self._stop_watchdog()
        if self._draining:
            self.finish()
            return
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._wake_body()

    def _wake_body(self) -> None:
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Close the connection (it leaves the pool)."""
        if not self.closed:
            self.closed = True
            self._pool.forget(self)
            if self.transport is not None:
                self.transport.close()


class _Pool:
    """Idle connections to one origin, most recently used last."""

    def __init__(self, client: HttpClient, endpoint: Endpoint, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.endpoint = endpoint
        self.loop = loop
        self.idle: deque[_Connection] = deque()

    def release(self, connection: _Connection) -> None:
        connection.idle_since = self.loop.time()
        self.idle.append(connection)
        self.client.wake_one()

    def forget(self, connection: _Connection) -> None:
        """The connection closed: it is neither idle nor open any more."""
        with contextlib.suppress(ValueError):
            self.idle.remove(connection)
        self.client.connection_closed(connection)

    def take_idle(self) -> _Connection | None:
        """The most recently used idle connection, after closing those idle for too long."""
        idle = self.idle
        if not idle:
            return None
        expired = self.loop.time() - self.client.keepalive_seconds
        while idle and idle[0].idle_since < expired:
            idle.popleft().close()
        return idle.pop() if idle else None


class Response:
    """An answer whose head has arrived; read its body with `read` or `iter_bytes`, then `close` it."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = connection.status
        self._closed = False
        self._decoder = (
            _content_decoder(connection.header(b"content-encoding"))
            if _CONTENT_ENCODING.search(connection.head)
            else None
        )

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The answer's headers, names lower-cased, in order."""
        return self._connection.headers

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header, by its lower-case name."""
        return self._connection.header(name)

    async def read(self, limit: int) -> bytes:
        """The whole body (decoded), at most `limit` bytes."""
        if self._decoder is None and (whole := self._connection.take_whole_body(limit)) is not None:
            return whole  # the common case: the answer came in with its head
        parts: list[bytes] = []
        size = 0
        async for piece in self.iter_bytes():
            size += len(piece)
            if size > limit:
                raise BodyTooLargeError(f"body larger than {limit} bytes")
            parts.append(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def piece_reader(self) -> Callable[[], Awaitable[bytes | None]]:
        """`next_piece`, or the connection's own reader when there is nothing to decode (one call less)."""
        return self._connection.next_body if self._decoder is None else self.next_piece

    async def next_piece(self) -> bytes | None:
        """The next piece of the body as it arrives (decoded), None at its end."""
        while True:
            piece = await self._connection.next_body()
            decoder = self._decoder
            if decoder is None:
                return piece
            if piece is None:
                self._decoder = None
                return decoder.flush() or None
            if piece := decoder.decompress(piece):
                return piece

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body piece by piece, as it arrives (decoded)."""
        while (piece := await self.next_piece()) is not None:
            yield piece

    def end_total_timeout(self) -> None:
        """Lift the total timeout (a stream past its first event); the read timeout still applies."""
        self._connection.end_total_timeout()

    def close(self, *, drain: bool = False) -> None:
        """Release the connection: to the pool when the body was read whole, else closed.

        `drain`: the rest of the body is not wanted but the answer is known to be ending (a stream past
        `[DONE]`): read and discard it in the background, then reuse the connection.
        """
        if not self._closed:
            self._closed = True
            if drain:
                self._connection.drain()
            else:
                self._connection.finish()


def _content_decoder(encoding: bytes | None) -> zlib._Decompress | None:
    if encoding is None or encoding.lower() == b"identity":
        return None
    if encoding.lower() in {b"gzip", b"x-gzip"}:
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    if encoding.lower() == b"deflate":
        return zlib.decompressobj()
    raise RemoteProtocolError(f"unsupported content-encoding {encoding.decode('latin-1')!r}")


class HttpClient:
    """Connection pools per origin, bounded in total; one instance shared by every upstream provider."""

    def __init__(
        self,
        *,
        max_connections: int = 256,
        connect_timeout: float = 10.0,
        keepalive_seconds: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.keepalive_seconds = keepalive_seconds
        self._ssl = ssl_context
        self._pools: dict[str, _Pool] = {}
        self._open: set[_Connection] = set()
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl

    def _pool(self, endpoint: Endpoint) -> _Pool:
        pool = self._pools.get(endpoint.origin)
        if pool is None:
            pool = self._pools[endpoint.origin] = _Pool(self, endpoint, asyncio.get_running_loop())
        return pool

    async def request(
        self, endpoint: Endpoint, data: bytes, *, read_timeout: float, total_timeout: float | None = None
    ) -> Response:
        """Send `data` (head, blank line, body: ready to write); the answer once its head is in.

        `read_timeout`: longest wait for any byte of the answer. `total_timeout`: bound on the whole call
        (waiting for a connection, connecting, the answer read whole) until `Response.end_total_timeout`.
        """
        if self._closed:
            raise ConnectError("client closed")
        pool = self._pool(endpoint)
        deadline = math.inf if total_timeout is None else pool.loop.time() + total_timeout
        for attempt in range(2):
            connection = (pool.take_idle() if attempt == 0 else None) or await self._connect(pool, deadline)
            connection.send(data, read_timeout, deadline)
            try:
                await connection.wait_head()
            except RemoteProtocolError:
                retry = connection.reused and connection.answered_nothing
                connection.finish()
                if retry:
                    continue  # the server closed the kept-alive connection as the request went out
                raise
            except BaseException:
                connection.finish()
                raise
            return Response(connection)
        raise RemoteProtocolError("server closed the connection before answering")  # pragma: no cover

    async def _connect(self, pool: _Pool, deadline: float) -> _Connection:
        while len(self._open) + self._connecting >= self.max_connections:
            waiter = pool.loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline if deadline < math.inf else None):
                    await waiter
            except TimeoutError:
                raise TotalTimeoutError("no free connection in time") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if (idle := pool.take_idle()) is not None:
                return idle
        endpoint = pool.endpoint
        tls = endpoint.scheme == "https"
        bound = min(pool.loop.time() + self.connect_timeout, deadline)
        self._connecting += 1
        try:
            async with asyncio.timeout_at(bound):
                _, connection = await pool.loop.create_connection(
                    lambda: _Connection(pool),
                    endpoint.host,
                    endpoint.port,
                    ssl=self._ssl_context() if tls else None,
                    server_hostname=endpoint.host if tls else None,
                )
        except TimeoutError:
            if bound >= deadline:
                raise TotalTimeoutError(f"no connection to {endpoint.authority} in time") from None
            raise ConnectTimeoutError(
                f"no connection to {endpoint.authority} in {self.connect_timeout:g} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"{endpoint.authority}: {exc}") from exc
        finally:
            self._connecting -= 1
        self._open.add(connection)
        return connection

    def connection_closed(self, connection: _Connection) -> None:
        """A connection went away: a caller waiting for room may connect."""
        if connection in self._open:
            self._open.discard(connection)
            self.wake_one()

    def wake_one(self) -> None:
        """Room for one more connection, or an idle one: the longest-waiting caller may go on."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        """Close every connection."""
        self._closed = True
        for connection in list(self._open):
            connection.close()
        await asyncio.sleep(0)
