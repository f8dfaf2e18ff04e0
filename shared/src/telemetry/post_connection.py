"""POSTs to one URL over one kept-alive HTTP/1.1 connection: the standard library's `http.client`, blocking.

The services' background senders use it from their own threads: the span exporter (OTLP/HTTP to Tempo), the
log forwarder (NDJSON to the shipper) and the log-shipper's pushes to Loki. Each sends one request at a time
to one URL, so a pool, async I/O or HTTP/2 buy nothing. Why not httpx, which the exporter and the forwarder
used before: importing it cost the gateway ~7 MB of RSS (idle `VmRSS` after start-up and five completions,
61.1 -> 54.3 MB, by hand, in a virtualenv built like the image: `uv sync --no-dev --package gatewayz-gateway
--no-editable`; its package import also loads its command-line client's `rich` and `pygments`), and the
gateway needs it for nothing else.

What it does: keep-alive, one fresh attempt when a reused connection turns out closed by the server (an idle
timeout on the other side; a fresh connection's failure is the caller's), `https` with the system's CA roots
(loaded once, at the first `https` connection: loading them costs ~80 M instructions and MBs of memory, so
plain `http` never does and a reconnect does not again), a timeout per socket operation (connect, each send
and read; settable per request), and `abort()` to cut a request in progress from another thread (shutdown).
Errors are `POST_ERRORS`: `OSError` (`TimeoutError` when a timeout ran out) or `http.client.HTTPException` (a
malformed answer). No proxy from the environment is used: the receivers are the deployment's own services.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

POST_ERRORS: Final = (OSError, http.client.HTTPException)
"""What `PostConnection.post` raises when no answer came (`TimeoutError`, an `OSError`, when time ran out)."""
_STALE = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)
"""A reused connection the server had closed (over TLS the close surfaces as an EOF in the TLS layer)."""
_TEXT_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Answer:
    """The status, `Retry-After` and the first 4 KiB of the body (decoded, for error details)."""

    status: int
    retry_after: str | None
    text: str


class PostConnection:
    """One kept-alive connection to `url`; `post` from one thread at a time, `abort` from any."""

    def __init__(self, url: str, timeout: float, headers: Mapping[str, str] | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = f"not an http(s) URL: {url!r}"
            raise ValueError(msg)
        self.url = url
        self.timeout = timeout
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {**(headers or {}), "Host": parts.netloc.rpartition("@")[2]}
        self._connection: http.client.HTTPConnection | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def post(
        self, body: bytes, headers: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> Answer:
        """POST `body` (with `headers` on top of the connection's); raises one of `POST_ERRORS`."""
        seconds = self.timeout if timeout is None else timeout
        sent = {**self._headers, **headers} if headers else self._headers
        with self._lock:
            reused = self._connection is not None
            try:
                try:
                    return self._request(body, sent, seconds)
                except _STALE:
                    if not reused:
                        raise
                    # The server closed the idle kept-alive connection: one fresh attempt.
                    self._drop()
                    return self._request(body, sent, seconds)
            except BaseException:
                self._drop()
                raise

    def _request(self, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
        connection = self._connection
        if connection is None:
            if self._tls:
                if self._tls_context is None:
                    self._tls_context = ssl.create_default_context()
                connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=self._tls_context
                )
            else:
                connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._connection = connection
        elif connection.sock is not None:
            connection.sock.settimeout(timeout)
        connection.timeout = timeout
        connection.request("POST", self._target, body, dict(headers))
        response = connection.getresponse()
        text = response.read(_TEXT_BYTES).decode("utf-8", "replace")
        if response.will_close or not response.isclosed():
            self._drop()  # closed by the server, or a body longer than we read: not reusable
        return Answer(response.status, response.getheader("Retry-After"), text)

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        """Close the connection, cutting a request in progress (`abort`); the next `post` opens a new one."""
        self.abort()
        with self._lock:
            self._drop()

    def abort(self) -> None:
        """Cut the connection under a request in progress: its `post` raises at once (used at shutdown)."""
        connection = self._connection
        sock = connection.sock if connection is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
