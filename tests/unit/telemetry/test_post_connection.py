"""`PostConnection`: one kept-alive connection, one fresh attempt on a stale one, timeouts, abort."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import free_port, modules_loaded
from telemetry.post_connection import POST_ERRORS, PostConnection


class RawServer:
    """A loopback HTTP/1.1 server on raw sockets, so a test controls what each connection does.

    `mode`: `keep` answers every request and keeps the connection; `close_idle` answers and then closes the
    connection without saying so (an idle timeout on the server's side); `silent` reads and never answers.
    """

    def __init__(self, mode: str, body: bytes = b"ok", tls: ssl.SSLContext | None = None) -> None:
        self.mode = mode
        self.body = body
        self.tls = tls
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:  # the client refused our certificate
                conn.close()
                return
        buffer = b""
        with conn:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                request_line, *lines = head.decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                self.requests.append((request_line, headers, body))
                if self.mode == "silent":
                    self._stop.wait(10)
                    return
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nRetry-After: 3\r\n\r\n%b"
                    % (len(self.body), self.body)
                )
                if self.mode == "close_idle":
                    time.sleep(0.05)
                    return

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self._listener.close()


@pytest.fixture
def server(request) -> Iterator[RawServer]:
    raw = RawServer(*request.param)
    yield raw
    raw.stop()


@pytest.mark.parametrize("server", [("keep",)], indirect=True)
def test_posts_share_one_kept_alive_connection(server):
    """Two POSTs, one TCP connection; the connection's headers plus each call's; Host without credentials."""
    connection = PostConnection(
        f"http://user:pw@127.0.0.1:{server.port}/v1/traces?x=1", 2, {"Content-Type": "a/b"}
    )
    first = connection.post(b"one")
    second = connection.post(b"two", {"Content-Encoding": "gzip"})
    assert (first.status, first.retry_after, first.text) == (200, "3", "ok")
    assert second.status == 200
    assert server.connections == 1
    (line1, headers1, body1), (line2, headers2, body2) = server.requests
    assert (line1, body1, line2, body2) == (
        "POST /v1/traces?x=1 HTTP/1.1",
        b"one",
        "POST /v1/traces?x=1 HTTP/1.1",
        b"two",
    )
    assert headers1["host"] == f"127.0.0.1:{server.port}"
    assert headers1["content-type"] == headers2["content-type"] == "a/b"
    assert "content-encoding" not in headers1
    assert headers2["content-encoding"] == "gzip"
    connection.close()


@pytest.mark.parametrize("server", [("close_idle",)], indirect=True)
def test_a_connection_the_server_closed_is_replaced_once(server):
    """The server dropped the idle connection: the next POST goes out on a fresh one and succeeds."""
    connection = PostConnection(f"http://127.0.0.1:{server.port}/", 2)
    assert connection.post(b"a").status == 200
    time.sleep(0.2)
    assert connection.post(b"b").status == 200
    assert [body for _, _, body in server.requests] == [b"a", b"b"]
    assert server.connections == 2
    connection.close()


def test_nothing_listening_raises_at_once():
    """A fresh connection that fails is the caller's error (no retry): ConnectionRefusedError."""
    connection = PostConnection(f"http://127.0.0.1:{free_port()}/", 2)
    with pytest.raises(ConnectionRefusedError):
        connection.post(b"a")


@pytest.mark.parametrize("server", [("silent",)], indirect=True)
def test_a_silent_server_times_out(server):
    """No answer within the timeout: TimeoutError (one of POST_ERRORS), after about that long."""
    connection = PostConnection(f"http://127.0.0.1:{server.port}/", 5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        connection.post(b"a", timeout=0.3)
    assert 0.25 < time.monotonic() - started < 2
    assert issubclass(TimeoutError, POST_ERRORS)


@pytest.mark.parametrize("server", [("silent",)], indirect=True)
@pytest.mark.parametrize("cut", ["abort", "close"])
def test_abort_or_close_cuts_a_post_in_progress(server, cut):
    """`abort` or `close` from another thread (shutdown): the waiting POST raises at once and the call
    returns, long before the POST's 10 s timeout."""
    connection = PostConnection(f"http://127.0.0.1:{server.port}/", 10)
    outcome: list[BaseException] = []

    def post() -> None:
        try:
            connection.post(b"a")
        except POST_ERRORS as exc:
            outcome.append(exc)

    thread = threading.Thread(target=post)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    getattr(connection, cut)()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1
    assert len(outcome) == 1


@pytest.mark.parametrize("server", [("keep", b"x" * 10_000)], indirect=True)
def test_a_long_answer_is_cut_to_4_kib_and_not_reused(server):
    """Only the first 4 KiB of a body are read (error details); the connection is then not reused."""
    connection = PostConnection(f"http://127.0.0.1:{server.port}/", 2)
    assert connection.post(b"a").text == "x" * 4096
    assert connection.post(b"b").status == 200
    assert server.connections == 2
    connection.close()


def test_only_http_urls():
    """A URL that is not http(s) is refused when the connection is made, naming it."""
    with pytest.raises(ValueError, match="tempo:4317"):
        PostConnection("tempo:4317", 1)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (Debian's `openssl`)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert)),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _tls_server(certificate: tuple[Path, Path]) -> RawServer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return RawServer("close_idle", tls=context)


def test_https_verifies_against_the_system_roots_loaded_once(certificate, monkeypatch):
    """https: the server's certificate is checked against the system's roots (here `SSL_CERT_FILE`), which
    are loaded once: the reconnect after the server closed the connection (over TLS an EOF in the TLS
    layer, not a plain disconnect) reuses them."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    loads: list[None] = []
    create = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda: loads.append(None) or create())
    server = _tls_server(certificate)
    try:
        connection = PostConnection(f"https://127.0.0.1:{server.port}/v1/traces", 2)
        assert connection.post(b"a").status == 200
        time.sleep(0.2)
        assert connection.post(b"b").status == 200
        connection.close()
    finally:
        server.stop()
    assert [body for _, _, body in server.requests] == [b"a", b"b"]
    assert server.connections == 2
    assert len(loads) == 1


def test_https_refuses_a_certificate_the_roots_do_not_hold(certificate, tmp_path, monkeypatch):
    """A server whose certificate no root signs: the POST fails (an OSError, one of POST_ERRORS), unsent."""
    empty = tmp_path / "no-roots.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    server = _tls_server(certificate)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            PostConnection(f"https://127.0.0.1:{server.port}/", 2).post(b"a")
    finally:
        server.stop()
    assert issubclass(ssl.SSLCertVerificationError, POST_ERRORS)
    assert server.requests == []


_BUILD_THE_GATEWAY = """
import sys
from gateway.app import create_app
from gateway.settings import GatewaySettings
from telemetry.delivery import HttpTransport
from telemetry.forwarder import create_forwarder
settings = GatewaySettings(gateway_db_path=sys.argv[1], environment="test", tempo_enabled=True)
create_app(settings)
HttpTransport("http://127.0.0.1:9/ingest", "gatewayz-api", 1.0).close()
print("loaded:", *[name for name in ("httpx",) if name in sys.modules])
"""


def test_the_gateway_with_its_exporter_and_forwarder_never_loads_httpx(tmp_path):
    """Built with the span exporter on and a forwarder's HTTP transport, the gateway has not imported httpx
    (~7 MB of RSS). A fresh interpreter: this one has (the tests' client)."""
    assert modules_loaded(_BUILD_THE_GATEWAY, tmp_path, str(tmp_path / "gateway.db")) == []
