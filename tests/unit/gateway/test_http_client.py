"""The upstream HTTP client against scripted servers on loopback: framing, pooling, failures, TLS."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Self

import pytest

from gateway.providers.http_client import (
    BodyTooLargeError,
    ConnectError,
    ConnectTimeoutError,
    Endpoint,
    HttpClient,
    ReadTimeoutError,
    RemoteProtocolError,
    TotalTimeoutError,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """An asyncio server on a free port whose every connection runs `handler`; counts connections."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self._handler = handler
        self._ssl = ssl_context
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def url(self, path: str = "/v1/chat/completions") -> str:
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (Content-Length framed)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def answer(body: bytes, *, status: int = 200, headers: str = "") -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


def keep_alive(reply: bytes, server_requests: list[bytes] | None = None) -> Handler:
    """Answer every request on the connection with `reply`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            if server_requests is not None:
                server_requests.append(request)
            writer.write(reply)
            await writer.drain()

    return handler


def message(endpoint: Endpoint, body: bytes = b"{}") -> bytes:
    head = endpoint.request_head("POST", {"Content-Type": "application/json"})
    return head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


async def call(
    client: HttpClient, url: str, *, read_timeout: float = 5.0, limit: int = 1 << 20
) -> tuple[int, bytes]:
    endpoint = Endpoint.parse(url)
    response = await client.request(endpoint, message(endpoint), read_timeout=read_timeout)
    try:
        return response.status, await response.read(limit)
    finally:
        response.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


class TestEndpoint:
    def test_parses_host_port_and_target(self):
        """The URL becomes host, port (the scheme's default when absent) and request target."""
        endpoint = Endpoint.parse("https://api.openai.com/v1/chat/completions?x=1")
        assert (endpoint.host, endpoint.port, endpoint.target) == (
            "api.openai.com",
            443,
            "/v1/chat/completions?x=1",
        )
        assert endpoint.authority == "api.openai.com"
        assert Endpoint.parse("http://127.0.0.1:8080/v1").authority == "127.0.0.1:8080"
        assert Endpoint.parse("http://[::1]:8080/v1").authority == "[::1]:8080"

    def test_refuses_other_schemes(self):
        """Only http and https URLs with a host are upstreams."""
        for url in ("ftp://x/y", "http:///nohost", "localhost:8000"):
            with pytest.raises(ValueError, match="not an http"):
                Endpoint.parse(url)

    def test_head_refuses_header_injection(self):
        """A header value with a line break (e.g. a key read from a bad env var) is refused, not sent."""
        with pytest.raises(ValueError, match="line breaks"):
            Endpoint.parse("http://x/y").request_head("POST", {"Authorization": "Bearer a\r\nX-Evil: 1"})


class TestFraming:
    def test_content_length_body_and_connection_reuse(self):
        """Sequential calls share one kept-alive connection and each reads its whole body."""

        async def scenario() -> None:
            async with Server(keep_alive(answer(b'{"ok": true}'))) as server:
                client = HttpClient()
                for _ in range(5):
                    assert await call(client, server.url()) == (200, b'{"ok": true}')
                assert server.connections == 1
                await client.aclose()

        run(scenario)

    def test_request_carries_head_and_body(self):
        """The request line, Host and body arrive as written."""

        async def scenario() -> None:
            seen: list[bytes] = []
            async with Server(keep_alive(answer(b"{}"), seen)) as server:
                client = HttpClient()
                await call(client, server.url("/v1/chat/completions"))
                await client.aclose()
            assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
            assert seen[0].endswith(b"\r\n\r\n{}")

        run(scenario)

    def test_chunked_body_arrives_piece_by_piece(self):
        """A chunked body is handed over as it arrives, before the server has finished it."""

        async def scenario() -> None:
            release = asyncio.Event()

            async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                await writer.drain()
                await release.wait()
                writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
                await writer.drain()
                await reader.read()

            async with Server(handler) as server:
                client = HttpClient()
                endpoint = Endpoint.parse(server.url())
                response = await client.request(endpoint, message(endpoint), read_timeout=5)
                pieces = response.iter_bytes()
                assert await anext(pieces) == b"first"
                release.set()
                assert [piece async for piece in pieces] == [b"second"]
                response.close()
                await client.aclose()

        run(scenario)

    def test_chunks_that_arrived_together_are_one_piece(self):
        """Chunks buffered since the last read come back as one piece (handled and relayed once)."""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n")  # one write, three chunks
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"4\r\nfour\r\n0\r\n\r\n")
            await writer.drain()
            await reader.read()

        async def scenario() -> None:
            async with Server(handler) as server:
                client = HttpClient()
                endpoint = Endpoint.parse(server.url())
                response = await client.request(endpoint, message(endpoint), read_timeout=5)
                await asyncio.sleep(0.02)  # the three chunks are in by now
                assert [piece async for piece in response.iter_bytes()] == [b"onetwothree", b"four"]
                response.close()
                await client.aclose()

        run(scenario)

    def test_close_delimited_body(self):
        """A body with neither length nor chunking ends at the close; that connection is not reused."""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
            await writer.drain()

        async def scenario() -> None:
            async with Server(handler) as server:
                client = HttpClient()
                assert await call(client, server.url()) == (200, b"all of it")
                assert await call(client, server.url()) == (200, b"all of it")
                assert server.connections == 2
                await client.aclose()

        run(scenario)

    def test_connection_close_header_is_not_reused(self):
        """`Connection: close` on an answer means the next call opens a new connection."""

        async def scenario() -> None:
            async with Server(keep_alive(answer(b"x", headers="Connection: close\r\n"))) as server:
                client = HttpClient()
                await call(client, server.url())
                await call(client, server.url())
                assert server.connections == 2
                await client.aclose()

        run(scenario)

    def test_gzip_answer_is_decoded(self):
        """A server that compresses anyway is decoded transparently."""
        body = gzip.compress(b'{"compressed": true}' * 50)

        async def scenario() -> None:
            async with Server(keep_alive(answer(body, headers="Content-Encoding: gzip\r\n"))) as server:
                client = HttpClient()
                assert await call(client, server.url()) == (200, b'{"compressed": true}' * 50)
                await client.aclose()

        run(scenario)

    def test_error_status_is_returned_not_raised(self):
        """A 503 is an answer like any other: status and body for the caller to map."""

        async def scenario() -> None:
            async with Server(keep_alive(answer(b'{"error": {}}', status=503))) as server:
                client = HttpClient()
                assert await call(client, server.url()) == (503, b'{"error": {}}')
                await client.aclose()

        run(scenario)

    def test_body_over_the_limit(self):
        """A body read whole larger than its bound fails instead of growing memory."""

        async def scenario() -> None:
            async with Server(keep_alive(answer(b"x" * 5000))) as server:
                client = HttpClient()
                with pytest.raises(BodyTooLargeError):
                    await call(client, server.url(), limit=1000)
                await client.aclose()

        run(scenario)

    def test_slow_reader_gets_a_large_stream_intact(self):
        """A 3 MiB chunked body read slowly (back-pressure pauses the socket) arrives byte for byte."""
        piece = bytes(range(256)) * 256  # 64 KiB

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(48):
                writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            await reader.read()

        async def scenario() -> None:
            async with Server(handler) as server:
                client = HttpClient()
                endpoint = Endpoint.parse(server.url())
                response = await client.request(endpoint, message(endpoint), read_timeout=5)
                received = bytearray()
                async for part in response.iter_bytes():
                    received += part
                    await asyncio.sleep(0.001)
                response.close()
                assert bytes(received) == piece * 48
                await client.aclose()

        run(scenario)


class TestPool:
    def test_server_closing_an_idle_connection_is_noticed(self):
        """When the server closes a kept-alive connection, the next call opens a new one, no error."""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(answer(b"one"))
            await writer.drain()  # keep-alive in the headers, but the server closes right after

        async def scenario() -> None:
            async with Server(handler) as server:
                client = HttpClient()
                assert await call(client, server.url()) == (200, b"one")
                await asyncio.sleep(0.05)  # the close reaches the client
                assert await call(client, server.url()) == (200, b"one")
                assert server.connections == 2
                await client.aclose()

        run(scenario)

    def test_kept_alive_connection_closed_as_the_request_goes_out_is_retried_once(self):
        """A reused connection closed with no byte of answer is retried on a fresh connection."""
        served = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal served
            await read_request(reader)
            served += 1
            writer.write(answer(b"first"))
            await writer.drain()
            await read_request(reader)  # the second request on this connection: drop it unanswered
            writer.transport.abort()

        async def scenario() -> None:
            async with Server(handler) as server:
                client = HttpClient()
                assert await call(client, server.url()) == (200, b"first")
                assert await call(client, server.url()) == (200, b"first")
                assert server.connections == 2
                assert served == 2
                await client.aclose()

        run(scenario)

    def test_fresh_connection_closed_without_answer_is_an_error(self):
        """On a new connection, a close before any answer is RemoteProtocolError (no retry)."""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.transport.abort()

        async def scenario() -> None:
            async with Server(handler) as server:
                client = HttpClient()
                with pytest.raises(RemoteProtocolError):
                    await call(client, server.url())
                assert server.connections == 1
                await client.aclose()

        run(scenario)

    def test_close_mid_body_is_an_error(self):
        """The server going away mid-body is RemoteProtocolError, and the connection is dropped."""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
            await writer.drain()
            writer.transport.abort()

        async def scenario() -> None:
            async with Server(handler) as server:
                client = HttpClient()
                with pytest.raises(RemoteProtocolError, match="mid-answer"):
                    await call(client, server.url())
                await client.aclose()

        run(scenario)

    def test_idle_connections_expire(self):
        """A connection idle longer than keepalive_seconds is closed rather than reused."""

        async def scenario() -> None:
            async with Server(keep_alive(answer(b"x"))) as server:
                client = HttpClient(keepalive_seconds=0.05)
                await call(client, server.url())
                await asyncio.sleep(0.1)
                await call(client, server.url())
                assert server.connections == 2
                await client.aclose()

        run(scenario)

    def test_connections_are_bounded(self):
        """With max_connections=2, 10 concurrent calls all succeed over at most 2 connections."""

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await read_request(reader)
                await asyncio.sleep(0.01)
                writer.write(answer(b"ok"))
                await writer.drain()

        async def scenario() -> None:
            async with Server(slow) as server:
                client = HttpClient(max_connections=2)
                results = await asyncio.gather(*(call(client, server.url()) for _ in range(10)))
                assert results == [(200, b"ok")] * 10
                assert server.most_open <= 2
                await client.aclose()

        run(scenario)

    def test_drained_stream_returns_its_connection(self):
        """Closed with drain=True early, the body is read out in the background and the connection reused."""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhead\r\n")
                await writer.drain()
                await asyncio.sleep(0.02)
                writer.write(b"4\r\ntail\r\n0\r\n\r\n")
                await writer.drain()

        async def scenario() -> None:
            async with Server(handler) as server:
                client = HttpClient()
                endpoint = Endpoint.parse(server.url())
                response = await client.request(endpoint, message(endpoint), read_timeout=5)
                assert await anext(response.iter_bytes()) == b"head"
                response.close(drain=True)
                await asyncio.sleep(0.1)
                response = await client.request(endpoint, message(endpoint), read_timeout=5)
                response.close()
                assert server.connections == 1
                await client.aclose()

        run(scenario)

    def test_cancelled_reader_drops_the_connection(self):
        """A caller cancelled mid-body (the client left) closes that connection: nothing half-read reused."""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhead\r\n")
            await writer.drain()
            await reader.read()  # returns once the client has closed the connection

        async def scenario() -> None:
            async with Server(handler) as server:
                client = HttpClient()
                endpoint = Endpoint.parse(server.url())

                async def read_all() -> None:
                    response = await client.request(endpoint, message(endpoint), read_timeout=5)
                    try:
                        async for _ in response.iter_bytes():
                            pass
                    finally:
                        response.close()

                task = asyncio.create_task(read_all())
                await asyncio.sleep(0.05)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await asyncio.sleep(0.05)
                assert server.open == 0
                await client.aclose()

        run(scenario)


class TestFailures:
    def test_connection_refused(self):
        """Nothing listening is ConnectError."""

        async def scenario() -> None:
            client = HttpClient()
            with pytest.raises(ConnectError):
                await call(client, "http://127.0.0.1:9/v1/chat/completions")

        run(scenario)

    def test_connect_timeout(self):
        """A listener whose accept queue is full never completes the handshake: ConnectTimeoutError."""
        import socket  # noqa: PLC0415

        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):  # fill the accept and SYN queues; later SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)

        async def scenario() -> None:
            client = HttpClient(connect_timeout=0.3)
            started = time.perf_counter()
            with pytest.raises(ConnectTimeoutError):
                await call(client, f"http://127.0.0.1:{port}/v1")
            assert time.perf_counter() - started < 2

        try:
            run(scenario)
        finally:
            for filler in fillers:
                filler.close()
            listener.close()

    def test_no_answer_is_a_read_timeout(self):
        """A server that accepts the request and never answers times out after read_timeout."""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await asyncio.sleep(10)

        async def scenario() -> None:
            async with Server(handler) as server:
                client = HttpClient()
                started = time.perf_counter()
                with pytest.raises(ReadTimeoutError):
                    await call(client, server.url(), read_timeout=0.2)
                assert 0.15 < time.perf_counter() - started < 1.0
                await client.aclose()

        run(scenario)

    def test_stall_mid_body_is_a_read_timeout(self):
        """Bytes keep the timer alive; a body that stops arriving times out."""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(5):  # 0.5 s of steady bytes, each gap shorter than the timeout
                writer.write(b"1\r\nx\r\n")
                await writer.drain()
                await asyncio.sleep(0.1)
            await asyncio.sleep(10)

        async def scenario() -> None:
            async with Server(handler) as server:
                client = HttpClient()
                endpoint = Endpoint.parse(server.url())
                response = await client.request(endpoint, message(endpoint), read_timeout=0.3)
                received: list[bytes] = []

                async def read_all() -> None:
                    async for piece in response.iter_bytes():
                        received.append(piece)

                with pytest.raises(ReadTimeoutError):
                    await read_all()
                response.close()
                assert b"".join(received) == b"xxxxx"
                await client.aclose()

        run(scenario)

    def test_total_timeout_bounds_a_trickling_answer(self):
        """Bytes every 0.05 s keep the read timeout quiet; the total timeout ends the call, until lifted."""

        async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for _ in range(12):
                    writer.write(b"1\r\nx\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.05)
                writer.write(b"0\r\n\r\n")
                await writer.drain()

        async def scenario() -> None:
            async with Server(trickle) as server:
                client = HttpClient()
                endpoint = Endpoint.parse(server.url())
                started = time.perf_counter()
                response = await client.request(
                    endpoint, message(endpoint), read_timeout=1, total_timeout=0.3
                )
                with pytest.raises(TotalTimeoutError):
                    await response.read(1 << 20)
                response.close()
                assert 0.25 < time.perf_counter() - started < 0.55
                response = await client.request(
                    endpoint, message(endpoint), read_timeout=1, total_timeout=0.3
                )
                response.end_total_timeout()
                assert await response.read(1 << 20) == b"x" * 12
                response.close()
                await client.aclose()

        run(scenario)

    def test_total_timeout_bounds_the_wait_for_a_head(self):
        """No answer at all within the total timeout (shorter than the read timeout) is TotalTimeoutError."""

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await asyncio.sleep(10)

        async def scenario() -> None:
            async with Server(silent) as server:
                client = HttpClient()
                endpoint = Endpoint.parse(server.url())
                with pytest.raises(TotalTimeoutError):
                    await client.request(endpoint, message(endpoint), read_timeout=5, total_timeout=0.2)
                await client.aclose()

        run(scenario)

    def test_garbage_answer(self):
        """Something that is not HTTP is RemoteProtocolError."""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
            await writer.drain()
            await reader.read()

        async def scenario() -> None:
            async with Server(handler) as server:
                client = HttpClient()
                with pytest.raises(RemoteProtocolError, match="malformed"):
                    await call(client, server.url())
                await client.aclose()

        run(scenario)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with Debian's openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class TestTls:
    def test_https_upstream(self, certificate):
        """An https URL is spoken over TLS, verified against the client's trust roots."""
        cert, key = certificate
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert, key)

        async def scenario() -> None:
            async with Server(keep_alive(answer(b"secure")), ssl_context=server_context) as server:
                client = HttpClient(ssl_context=ssl.create_default_context(cafile=str(cert)))
                assert await call(client, server.url()) == (200, b"secure")
                assert await call(client, server.url()) == (200, b"secure")
                assert server.connections == 1
                await client.aclose()

        run(scenario)

    def test_untrusted_certificate_is_a_connect_error(self, certificate):
        """A certificate the trust roots do not vouch for fails the handshake: ConnectError, nothing sent."""
        cert, key = certificate
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert, key)
        seen: list[bytes] = []

        async def scenario() -> None:
            async with Server(keep_alive(answer(b"x"), seen), ssl_context=server_context) as server:
                client = HttpClient()  # certifi's roots: the self-signed certificate is not among them
                with pytest.raises(ConnectError):
                    await call(client, server.url())
                await client.aclose()

        run(scenario)
        assert seen == []
