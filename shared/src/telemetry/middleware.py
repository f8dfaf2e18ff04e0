"""Pure-ASGI middleware wrapped around the Litestar app: HTTP metrics, one server span, the access line.

It sits outside Litestar's exception handling so 404/405 and errors are seen too (Litestar applies its own
middleware per route handler, so requests matching no route would never reach an inner one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType
from litestar.utils.path import normalize_path
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from telemetry.metrics import KNOWN_METHODS, UNMATCHED_PATH, HttpMetrics, RouteInstruments

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar import Litestar
    from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

_PROPAGATOR = TraceContextTextMapPropagator()

AccessLogWriter = Callable[[str, str, dict[str, Any], "str | None", "str | None"], None]
"""`JsonSink.write_event`: (level, message, fields, trace_id, span_id)."""
CLIENT_CLOSED_REQUEST = 499
"""Status recorded when the client went away before a response started (nginx's convention)."""


class _HeaderGetter(Getter["Iterable[tuple[bytes, bytes]]"]):
    """Reads `traceparent`/`tracestate` from raw ASGI headers for the W3C propagator."""

    def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
        raw_key = key.encode("latin-1")
        values = [value.decode("latin-1") for name, value in carrier if name == raw_key]
        return values or None

    def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
        return [name.decode("latin-1") for name, _ in carrier]


_GETTER = _HeaderGetter()


def resolve_route(app: Litestar, scope: Scope) -> str | None:
    """The route template `scope` will be served by, or None when no route matches."""
    path = scope["path"]
    if root_path := scope.get("root_path", ""):
        path = path.split(root_path, maxsplit=1)[-1]
    try:
        # Litestar caches this lookup, so the router's own call for the same request is a cache hit.
        *_, template = app.asgi_router.handle_routing(path=normalize_path(path), method=scope.get("method"))
    except Exception:  # noqa: BLE001 - NotFound/MethodNotAllowed: the request is unmatched
        return None
    return str(template)


class RouteResolver:
    """`resolve_route` with a bounded memo per (method, path).

    Litestar's lookup runs a regex and builds a tuple on every call, and a few paths make up most traffic.
    Long paths are not memoised and a full memo is emptied, so random paths cost memory only up to the
    bound, never grow it.
    """

    def __init__(self, app: Litestar, *, max_entries: int = 4096, max_path_length: int = 256) -> None:
        self._app = app
        self._memo: dict[tuple[object, str, str], str | None] = {}
        self._max_entries = max_entries
        self._max_path_length = max_path_length

    def __call__(self, scope: Scope) -> str | None:
        """The route template serving `scope`, or None."""
        key = (scope.get("method", ""), scope["path"], scope.get("root_path", ""))
        try:
            return self._memo[key]
        except KeyError:
            pass
        template = resolve_route(self._app, scope)
        if len(key[1]) <= self._max_path_length:
            if len(self._memo) >= self._max_entries:
                self._memo.clear()
            self._memo[key] = template
        return template


class _Exchange:
    """What the middleware learns about one request while the app serves it, via wrapped receive/send."""

    __slots__ = ("_receive", "_send", "request_bytes", "response_bytes", "started", "status_code")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.status_code = 500
        self.started = False
        self.request_bytes = 0
        self.response_bytes = 0

    async def receive(self) -> ReceiveMessage:
        """Receive, counting request body bytes."""
        message = await self._receive()
        if message["type"] == "http.request":
            self.request_bytes += len(message.get("body", b""))
        return message

    def send(self, message: Message) -> Awaitable[None]:
        """Note the status and count response body bytes (every chunk of a stream), then send.

        A plain function returning the inner send's awaitable: no coroutine of its own per message.
        """
        if message["type"] == "http.response.body":  # compared in place so mypy narrows the TypedDict
            self.response_bytes += len(message.get("body", b""))
        elif message["type"] == "http.response.start":
            self.status_code = message["status"]
            self.started = True
        return self._send(message)


class TelemetryMiddleware:
    """Measures every HTTP request: the six `fastapi_*` families, a server span, one access log line."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        route_resolver: Callable[[Scope], str | None],
        metrics: HttpMetrics,
        tracer: trace.Tracer,
        exclude_paths: Iterable[str] = ("/metrics",),
        access_log: AccessLogWriter | None = None,
    ) -> None:
        self.app = app
        self.route_resolver = route_resolver
        self.metrics = metrics
        self.tracer = tracer
        self.exclude_paths = frozenset(exclude_paths)
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection, measuring it when it is an HTTP request not excluded."""
        if scope["type"] != ScopeType.HTTP or scope["path"] in self.exclude_paths:
            await self.app(scope, receive, send)
            return

        method: str = scope["method"]
        if method not in KNOWN_METHODS:
            method = "OTHER"
        template = self.route_resolver(scope)
        instruments = self.metrics.route(method, template or UNMATCHED_PATH)
        span = self._start_span(scope, method, template)
        token = otel_context.attach(trace.set_span_in_context(span))
        exchange = _Exchange(receive, send)

        instruments.in_progress.inc()
        start = perf_counter()
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except asyncio.CancelledError:
            if not exchange.started:
                exchange.status_code = CLIENT_CLOSED_REQUEST
            raise
        except Exception as exc:
            self.metrics.count_exception(exc)
            span.record_exception(exc)
            if not exchange.started:
                exchange.status_code = 500
            raise
        finally:
            duration = perf_counter() - start
            instruments.in_progress.dec()
            try:
                self._record(scope, method, template, instruments, exchange, duration, span)
            finally:
                span.end()
                otel_context.detach(token)

    def _start_span(self, scope: Scope, method: str, template: str | None) -> trace.Span:
        headers = scope["headers"]
        parent = _PROPAGATOR.extract(headers, getter=_GETTER) if _has_traceparent(headers) else None
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": scope["path"]}
        if template is not None:
            attributes["http.route"] = template
        name = f"{method} {template}" if template is not None else method
        return self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)

    def _record(
        self,
        scope: Scope,
        method: str,
        template: str | None,
        instruments: RouteInstruments,
        exchange: _Exchange,
        duration: float,
        span: trace.Span,
    ) -> None:
        status = exchange.status_code
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        context = span.get_span_context()
        trace_id = context.trace_id.to_bytes(16, "big").hex() if context.is_valid else None
        # Exemplars point at stored traces only: an unsampled trace id would open nothing in Tempo.
        exemplar = trace_id if trace_id is not None and context.trace_flags.sampled else None
        instruments.requests(status).inc(1, exemplar)
        instruments.duration.observe(duration, exemplar)
        instruments.request_size.observe(exchange.request_bytes)
        instruments.response_size.observe(exchange.response_bytes)
        if self.access_log is not None:
            level = "ERROR" if status >= 500 else "WARNING" if status >= 400 else "INFO"
            fields = {
                "endpoint": template if template is not None else scope["path"][:256],
                "method": method,
                "status_code": status,
                "duration_ms": round(duration * 1_000_000) / 1000,  # to the µs; round(x, 3) is 4x slower
            }
            span_id = context.span_id.to_bytes(8, "big").hex() if trace_id is not None else None
            self.access_log(level, "Request completed", fields, trace_id, span_id)


def _has_traceparent(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, _ in headers:  # noqa: SIM110 - any() over a generator costs twice as much here
        if name == b"traceparent":
            return True
    return False
