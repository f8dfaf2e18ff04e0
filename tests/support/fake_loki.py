"""A strict fake Loki on loopback: `POST /loki/api/v1/push` answered the way Loki 3.7.6 answers it.

Checks the wire contract recorded in BACKENDS.md (Content-Type, Content-Encoding, JSON shape, nanosecond
timestamps as strings, label names and values, line size, age windows), and, for any type but JSON, the
snappy-compressed `logproto.PushRequest` Loki's own clients send, decoded with the `protobuf` package
(labels in Prometheus label-set syntax, `google.protobuf.Timestamp`s). Stores accepted entries de-duplicated
on exact (timestamp, line) like Loki, serves Loki's own counters on `/metrics`
(`loki_distributor_lines_received_total`, `loki_discarded_samples_total{reason}`), and can inject 429 with
Retry-After, 5xx, 400, 413 and outages.
"""

from __future__ import annotations

import contextlib
import gzip
import random
import re
import socket
import sys
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import cramjam
import msgspec
from google.protobuf.message import DecodeError

from support.logproto import PushRequest

NS = 1_000_000_000
MAX_AGE_NS = 7 * 24 * 3600 * NS
GRACE_NS = 10 * 60 * NS  # Loki's creation_grace_period
BEHIND_NS = 3600 * NS  # out-of-order window per stream
MAX_LINE_BYTES = 262_144
MAX_LABEL_VALUE = 2048
MAX_LABEL_NAMES = 15
RATE_BURST_BYTES = 6 * 1024 * 1024
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
PUSH_PATH = "/loki/api/v1/push"

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Reply:
    """A scripted answer given instead of processing a push."""

    status: int
    body: str = ""
    retry_after: str | None = None


@dataclass(slots=True)
class Push:
    """One push as received: status answered, headers, entries in it."""

    status: int
    headers: dict[str, str]
    entries: int
    body: str = ""


@dataclass(slots=True)
class Stream:
    """Stored entries of one label set, in arrival order, de-duplicated on (ts, line)."""

    labels: dict[str, str]
    entries: dict[tuple[int, str], None] = field(default_factory=dict)
    newest: int = 0


class PushError(Exception):
    """A push Loki answers with a status other than 204."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FakeLoki:
    """Serve with `start()`, simulate an outage with `stop()`/`start()`, read with `lines()`.

    `accepted` counts entries taken (duplicates included); `keep=False` stores none (benchmarks).
    """

    def __init__(self, port: int = 0, seed: int = 5, *, keep: bool = True) -> None:
        self.port = port
        self.keep = keep
        self.accepted = 0
        self._lock = threading.Lock()
        self._streams: dict[Labels, Stream] = {}
        self.pushes: list[Push] = []
        self.script: deque[Reply] = deque()
        self.failure_rate = 0.0
        self.failure_replies: tuple[Reply, ...] = (Reply(429, "rate limited", "0"), Reply(503, "unavailable"))
        self._random = random.Random(seed)  # noqa: S311 - reproducible fault injection
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self.received_lines = 0
        """`loki_distributor_lines_received_total`: entries of every push that decoded."""
        self.discarded: dict[str, int] = {}
        """`loki_discarded_samples_total` by reason (only reasons seen, as Loki shows them)."""

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeLoki:
        """Listen (again, on the same port after a `stop()`)."""
        server = _QuietServer(("127.0.0.1", self.port), _handler_for(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """An outage: stop listening and cut every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def push_url(self) -> str:
        """What `LOKI_PUSH_URL` should be."""
        return self.url + PUSH_PATH

    # --- injection -------------------------------------------------------------------------------
    def fail_next(
        self, status: int, times: int = 1, *, retry_after: str | None = None, body: str = ""
    ) -> None:
        """Answer the next `times` pushes with `status` (storing nothing)."""
        for _ in range(times):
            self.script.append(Reply(status, body or f"injected {status}", retry_after))

    # --- reading ---------------------------------------------------------------------------------
    def streams(self) -> list[dict[str, str]]:
        """Label sets stored."""
        with self._lock:
            return [dict(stream.labels) for stream in self._streams.values()]

    def entries(self, **labels: str) -> list[tuple[int, str]]:
        """(ns, line) of every stream whose labels include `labels`, in arrival order."""
        with self._lock:
            found: list[tuple[int, str]] = []
            for stream in self._streams.values():
                if all(stream.labels.get(name) == value for name, value in labels.items()):
                    found.extend(stream.entries)
            return found

    def lines(self, **labels: str) -> list[str]:
        """Lines of the matching streams."""
        return [line for _, line in self.entries(**labels)]

    def wait_for(self, count: int, timeout: float = 10.0, **labels: str) -> list[str]:
        """Poll until at least `count` matching lines are stored (or `timeout`); the lines."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines(**labels)
            if len(lines) >= count or time.monotonic() >= deadline:
                return lines
            time.sleep(0.02)

    def statuses(self) -> list[int]:
        """The status of every push so far."""
        with self._lock:
            return [push.status for push in self.pushes]

    # --- the push contract ---------------------------------------------------------------------
    def handle_push(self, headers: dict[str, str], raw: bytes) -> tuple[int, str, dict[str, str]]:
        """Status, body and extra headers for one push, storing what Loki would store."""
        with self._lock:
            reply = self._injected()
        if reply is not None:
            extra = {"Retry-After": reply.retry_after} if reply.retry_after is not None else {}
            self._record(Push(reply.status, headers, 0, reply.body))
            return reply.status, reply.body, extra
        try:
            streams = _decode(headers, raw)
            count = sum(len(values) for _, values in streams)
            total = sum(len(value[1]) for _, values in streams for value in values)
            with self._lock:
                self.received_lines += count
                if total > RATE_BURST_BYTES:
                    self._discard("rate_limited", count)
                    raise PushError(429, "ingestion rate limit exceeded (limit: 4194304 bytes/sec)")
                errors = self._store(streams)
        except PushError as exc:
            self._record(Push(exc.status, headers, 0, exc.message))
            return exc.status, exc.message, {}
        status = 400 if errors else 204
        body = "\n".join(errors)
        self._record(Push(status, headers, count, body))
        return status, body, {}

    def _discard(self, reason: str, count: int = 1) -> None:
        self.discarded[reason] = self.discarded.get(reason, 0) + count

    def metrics_text(self) -> str:
        """Loki's own counters of lines received and discarded, in the exposition format it serves."""
        with self._lock:
            lines = [
                "# TYPE loki_distributor_lines_received_total counter",
                f'loki_distributor_lines_received_total{{tenant="fake"}} {self.received_lines}',
                "# TYPE loki_discarded_samples_total counter",
            ]
            lines += [
                f'loki_discarded_samples_total{{reason="{reason}",tenant="fake"}} {count}'
                for reason, count in sorted(self.discarded.items())
            ]
        return "\n".join(lines) + "\n"

    def _injected(self) -> Reply | None:
        if self.script:
            return self.script.popleft()
        if self.failure_rate and self._random.random() < self.failure_rate:
            return self._random.choice(self.failure_replies)
        return None

    def _record(self, push: Push) -> None:
        with self._lock:
            self.pushes.append(push)

    def _store(self, streams: list[tuple[dict[str, str], list[list[Any]]]]) -> list[str]:
        """Store every valid entry; the errors (any makes the answer 400, but the good entries stay)."""
        errors: list[str] = []
        now = time.time_ns()
        for labels, values in streams:
            problem = _label_problem(labels)
            if problem:
                errors.append(problem)
                self._discard("invalid_labels", len(values))
                continue
            stored = labels or {"service_name": "unknown_service"}
            key = tuple(sorted(stored.items()))
            stream = self._streams.get(key)
            if stream is None:
                stream = self._streams[key] = Stream(dict(stored))
            for ts_text, line in ((value[0], value[1]) for value in values):
                ts = int(ts_text)
                if ts < now - MAX_AGE_NS:
                    errors.append(f"entry for stream '{labels}' has timestamp too old: {ts}")
                    self._discard("greater_than_max_sample_age")
                elif ts > now + GRACE_NS:
                    errors.append(f"entry for stream '{labels}' has timestamp too new: {ts}")
                    self._discard("too_far_in_future")
                elif len(line.encode()) > MAX_LINE_BYTES:
                    errors.append(f"stream '{labels}' max entry size '{MAX_LINE_BYTES}' bytes exceeded")
                    self._discard("line_too_long")
                elif ts < stream.newest - BEHIND_NS:
                    errors.append(f"entry too far behind, entry timestamp is: {ts}")
                    self._discard("too_far_behind")
                else:
                    self.accepted += 1
                    if self.keep:  # a benchmark only counts
                        stream.entries[(ts, line)] = None
                    stream.newest = max(stream.newest, ts)
        return errors


def _label_problem(labels: dict[str, str]) -> str | None:
    if len(labels) > MAX_LABEL_NAMES:
        return f"stream '{labels}' has {len(labels)} label names; limit {MAX_LABEL_NAMES}"
    for name, value in labels.items():
        if not LABEL_NAME.match(name):
            return f"couldn't parse labels: {name!r}"
        if len(value) > MAX_LABEL_VALUE:
            return f"stream '{labels}' label value too long: {value[:20]}…"
    return None


def _decode(headers: dict[str, str], raw: bytes) -> list[tuple[dict[str, str], list[list[Any]]]]:
    """The body as (labels, values) pairs, or a `PushError` with Loki's status and message.

    As Loki's `ParseLokiRequest`: the Content-Encoding first (none, `snappy` or absent: as sent; gzip and
    deflate decoded; anything else refused), then the media type: `application/json` is JSON, any other
    type is snappy-compressed `logproto.PushRequest`.
    """
    encoding = headers.get("content-encoding", "")
    if encoding == "gzip":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise PushError(400, f"gzip: {exc}") from None
    elif encoding == "deflate":
        try:
            raw = zlib.decompress(raw, -15)
        except zlib.error as exc:
            raise PushError(400, f"flate: {exc}") from None
    elif encoding not in {"", "snappy"}:
        raise PushError(400, f"Content-Encoding {encoding!r} not supported")
    content_type = headers.get("content-type")
    if not content_type:
        raise PushError(400, "mime: no media type")
    if content_type.split(";")[0].strip().lower() == "application/json":
        streams = _decode_json(raw)
    else:
        streams = _decode_protobuf(raw)  # Loki reads any other type (text/plain too) as protobuf
    if not streams:
        raise PushError(422, "at least one valid stream is required")
    return streams


def _decode_json(raw: bytes) -> list[tuple[dict[str, str], list[list[Any]]]]:
    if not raw:
        raise PushError(400, "EOF")
    try:
        document = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise PushError(400, f"loghttp.PushRequest.Streams: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("streams", []), list):
        raise PushError(400, "loghttp.PushRequest: expected an object with a streams array")
    streams = []
    for item in document.get("streams", []):
        if not isinstance(item, dict):
            raise PushError(400, "loghttp.PushRequest.Streams: expected objects")
        labels = item.get("stream", {})
        values = item.get("values", [])
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise PushError(400, "loghttp.PushRequest.Streams: stream labels must be strings")
        if not isinstance(values, list):
            raise PushError(400, "loghttp.PushRequest.Streams: values must be an array")
        for value in values:
            _check_value(value)
        streams.append((labels, values))
    return streams


def _decode_protobuf(raw: bytes) -> list[tuple[dict[str, str], list[list[Any]]]]:
    """Snappy block format, then `logproto.PushRequest`; labels in Prometheus label-set syntax."""
    try:
        body = bytes(cramjam.snappy.decompress_raw(raw)) if raw else None
    except cramjam.DecompressionError:
        body = None
    if body is None:
        raise PushError(400, "snappy: corrupt input")
    request = PushRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise PushError(400, f"proto: {exc}") from None
    streams = []
    for stream in request.streams:
        labels = parse_label_set(stream.labels)
        values: list[list[Any]] = []
        for entry in stream.entries:
            if not 0 <= entry.timestamp.nanos < NS:
                raise PushError(400, f"timestamp: {entry.timestamp} nanos not in range")
            ts = entry.timestamp.seconds * NS + entry.timestamp.nanos
            metadata = {pair.name: pair.value for pair in entry.structuredMetadata}
            values.append([str(ts), entry.line, metadata] if metadata else [str(ts), entry.line])
        streams.append((labels, values))
    return streams


_LABEL_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|(.))")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def parse_label_set(text: str) -> dict[str, str]:
    r"""`{name="value", …}` as Loki's `syntax.ParseLabels` reads it; 400 `couldn't parse labels` else.

    Values are Go-quoted strings: `\"`, `\\`, `\n`, `\t`, `\r`, `\b`, `\f` and `\uXXXX` escapes.
    """
    problem = PushError(400, f"couldn't parse labels: {text!r}")
    if not (text.startswith("{") and text.endswith("}")):
        raise problem
    labels: dict[str, str] = {}
    position, end = 1, len(text) - 1
    while text[position:end].strip():
        match = _LABEL_PAIR.match(text, position, end)
        if match is None:
            raise problem

        def unescape(escape: re.Match[str]) -> str:
            if escape[1]:
                return chr(int(escape[1], 16))
            if escape[2] not in _ESCAPES:
                raise problem
            return _ESCAPES[escape[2]]

        name = match[1]
        if name in labels:
            raise PushError(400, f"couldn't parse labels: duplicate label name {name!r}")
        labels[name] = _ESCAPE.sub(unescape, match[2])
        position = match.end()
    return labels


def _check_value(value: object) -> None:
    if not isinstance(value, list) or len(value) not in {2, 3}:
        raise PushError(400, "loghttp.PushRequest.Streams: an entry is [timestamp, line(, metadata)]")
    ts, line = value[0], value[1]
    if not isinstance(ts, str):
        raise PushError(
            400, "loghttp.PushRequest.Streams: Value looks like Number/Bool/None, but can't find its end"
        )
    if not ts.isdigit():
        raise PushError(400, f"loghttp.PushRequest.Streams: cannot parse timestamp {ts!r}")
    if not isinstance(line, str):
        raise PushError(400, "loghttp.PushRequest.Streams: the line must be a string")


class _QuietServer(ThreadingHTTPServer):
    """A client that goes away mid-connection (a killed shipper) is normal here, not a traceback."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def _handler_for(loki: FakeLoki) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with loki._lock:
                loki._connections.add(self.connection)

        def finish(self) -> None:
            with loki._lock:
                loki._connections.discard(self.connection)
            super().finish()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path.split("?")[0] != PUSH_PATH:
                self._answer(404, "404 page not found", {})
                return
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, body, extra = loki.handle_push(headers, raw)
            self._answer(status, body, extra)

        def do_GET(self) -> None:
            if self.path == "/ready":
                self._answer(200, "ready", {})
            elif self.path == "/metrics":
                self._answer(200, loki.metrics_text(), {})
            else:
                self._answer(404, "404 page not found", {})

        def _answer(self, status: int, body: str, extra: dict[str, str]) -> None:
            data = body.encode() if status != 204 else b""
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            if status != 204:
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)

    return Handler
