"""JSON log lines on stdout (SPEC §4): loguru with one msgspec-encoding sink, stdlib logging routed in."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

import msgspec
from loguru import logger
from opentelemetry import trace

from telemetry.redaction import MASK, is_secret_name

if TYPE_CHECKING:
    from loguru import Message, Record, RecordException

    from telemetry.forwarder import LogForwarder
    from telemetry.settings import TelemetrySettings

# Loggers whose records we route into our sink; uvicorn's own access log is replaced by ours.
_STDLIB_LOGGERS = ("uvicorn", "uvicorn.error", "httpx", "httpcore", "litestar", "asyncio", "opentelemetry")
_QUIET_LOGGERS = {
    "httpcore": logging.WARNING,
    "httpx": logging.WARNING,
    "uvicorn.access": logging.CRITICAL + 1,
}


LEVEL_NUMBERS = {
    "TRACE": 5,
    "DEBUG": 10,
    "INFO": 20,
    "SUCCESS": 25,
    "WARNING": 30,
    "ERROR": 40,
    "CRITICAL": 50,
}


_MILLIS = (*(f".{millis:03d}Z" for millis in range(1000)), ".999Z")
"""The sub-second tail of every timestamp, formatted once; a fraction a hair under 1 can round up to 1000.0
when multiplied, so index 1000 reads .999 too."""


class JsonSink:
    """Writes one SPEC §4 JSON object per line with a reused msgspec encoder.

    loguru calls it for every `logger.*` record; `write_event` is the hot path for lines the telemetry code
    builds itself (the access line), skipping loguru's record machinery (frame lookup, record dict, lock).
    """

    def __init__(self, service: str, stream: IO[bytes] | None = None, level: str = "INFO") -> None:
        self._service = service
        self._stream = stream
        self._encoder = msgspec.json.Encoder()
        self.lock = threading.Lock()
        """Held for each line's write; the log forwarder's `offer` relies on it too."""
        self._min_level = LEVEL_NUMBERS[level]
        self._second = -1
        self._second_text = ""
        self._forward: Callable[[bytes], None] | None = None
        self._forwarder: LogForwarder | None = None

    def forward_to(self, forwarder: LogForwarder | None) -> None:
        """Also hand every line written from now on to `forwarder` (None: stdout only again)."""
        with self.lock:
            self._forwarder = forwarder
            self._forward = forwarder.offer if forwarder is not None else None

    def __call__(self, message: Message) -> None:
        """Encode and write one loguru record."""
        record = message.record
        line = self._encoder.encode(self.build(record))
        # What the forwarder's own thread logs (its reports, httpx) stays on stdout: no feedback loop.
        forwarder = self._forwarder
        forward = forwarder is None or record["thread"].id != forwarder.thread_id
        self.write_bytes(line + b"\n", forward=forward)

    def write_event(
        self,
        level: str,
        message: str,
        fields: dict[str, Any],
        trace_id: str | None,
        span_id: str | None,
        *,
        forward: bool = True,
    ) -> None:
        """Write one line from pre-built fields (keys chosen by our code, so no secret masking needed)."""
        if LEVEL_NUMBERS[level] < self._min_level:
            return
        line = {"timestamp": self._timestamp(time.time()), "level": level, "service": self._service, **fields}
        if trace_id is not None:
            line["trace_id"] = trace_id
            line["span_id"] = span_id
        line["message"] = message
        self.write_bytes(self._encoder.encode(line) + b"\n", forward=forward)

    def write_local(self, level: str, message: str, fields: dict[str, Any]) -> None:
        """Write one line to stdout only, never forwarded (the forwarder's own reports)."""
        self.write_event(level, message, fields, None, None, forward=False)

    def write_bytes(self, data: bytes, *, forward: bool = True) -> None:
        """Write whole lines: to the stream given, else straight to file descriptor 1 (no buffering).

        With forwarding on, the same bytes are then queued for the log-shipper (under this lock, which
        the forwarder's queue counters rely on).
        """
        with self.lock:
            if self._stream is not None:
                self._stream.write(data)
                self._stream.flush()
            else:
                written = os.write(1, data)
                if written < len(data):  # a pipe may take part of a long line; write the rest
                    view = memoryview(data)[written:]
                    while view:
                        view = view[os.write(1, view) :]
            if forward and self._forward is not None:
                self._forward(data)

    def build(self, record: Record) -> dict[str, Any]:
        """The JSON object for `record`: base fields, extras (secrets masked), trace ids, message."""
        line: dict[str, Any] = {
            "timestamp": self._timestamp(record["time"].timestamp()),
            "level": record["level"].name,
            "service": self._service,
        }
        for key, value in record["extra"].items():
            line[key] = MASK if is_secret_name(key) else value
        if "trace_id" not in line:
            context = trace.get_current_span().get_span_context()
            # An invalid context means no active span: omit the ids rather than write zeros.
            if context.is_valid:
                line["trace_id"] = format(context.trace_id, "032x")
                line["span_id"] = format(context.span_id, "016x")
        exception = record["exception"]
        if exception is not None and exception.type is not None:
            line["exception_type"] = exception.type.__name__
            line["exception"] = _format_exception(exception)
        line["message"] = record["message"]
        return line

    def _timestamp(self, timestamp: float) -> str:
        """UTC, millisecond precision, `Z`; the second-level prefix is cached (one strftime a second)."""
        second = int(timestamp)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return self._second_text + _MILLIS[int((timestamp - second) * 1000)]


def _format_exception(exception: RecordException) -> str:
    import traceback  # noqa: PLC0415 - only on the rare exception path

    return "".join(traceback.format_exception(exception.type, exception.value, exception.traceback)).rstrip()


class InterceptHandler(logging.Handler):
    """Routes stdlib `logging` records (uvicorn, httpx, litestar) into loguru, keeping level and origin."""

    def emit(self, record: logging.LogRecord) -> None:
        """Forward one record."""
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info, depth=6).bind(logger=record.name).log(
            level, record.getMessage()
        )


def configure_logging(settings: TelemetrySettings, stream: IO[bytes] | None = None) -> JsonSink:
    """Make loguru and stdlib logging write SPEC §4 JSON lines at `LOG_LEVEL` to stdout (or `stream`)."""
    sink = JsonSink(settings.service_name, stream, settings.log_level)
    logger.remove()
    logger.add(sink, level=settings.log_level, format="{message}", backtrace=False, diagnose=False)
    handler = InterceptHandler()
    logging.basicConfig(handlers=[handler], level=logging.getLevelName(_stdlib_level(settings)), force=True)
    for name in _STDLIB_LOGGERS:
        stdlib_logger = logging.getLogger(name)
        stdlib_logger.handlers = []
        stdlib_logger.propagate = True
    for name, level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    return sink


def _stdlib_level(settings: TelemetrySettings) -> str:
    return "DEBUG" if settings.log_level == "TRACE" else settings.log_level
