"""Outbound HTTP: one shared `httpx.AsyncClient` held for the app's lifetime, a CLIENT span per call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from telemetry.redaction import mask

if TYPE_CHECKING:
    from litestar import Litestar

_PROPAGATOR = TraceContextTextMapPropagator()
_USER_AGENT = "gatewayz-admin"


class UpstreamError(Exception):
    """A call to another part of the stack failed: unreachable, timed out, or not HTTP."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Upstream:
    """Calls the gateway, log shipper, Prometheus, Loki and Tempo with propagated W3C trace context."""

    def __init__(self, tracer: trace.Tracer, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._tracer = tracer
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def lifespan(self, _app: Litestar) -> AsyncIterator[None]:
        """Open the shared client for the app's lifetime (connection pooling across requests)."""
        async with httpx.AsyncClient(
            transport=self._transport,
            follow_redirects=False,
            headers={"user-agent": _USER_AGENT},
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
        ) as client:
            self._client = client
            try:
                yield
            finally:
                self._client = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        route: str,
        timeout: float,  # noqa: ASYNC109 - httpx's per-phase timeout; callers bound whole operations too
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        json: object = None,
    ) -> httpx.Response:
        """Send one request inside a CLIENT span named `"{method} {route}"`; raise `UpstreamError` on failure.

        `route` is the fixed path template being called, so span names stay low-cardinality.
        """
        if self._client is None:
            raise UpstreamError("the HTTP client is not open (the app has not started)")
        outgoing = dict(headers or {})
        with self._tracer.start_as_current_span(
            f"{method} {route}",
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": method, "url.full": public_url(url)},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            _PROPAGATOR.inject(outgoing)
            try:
                response = await self._client.request(
                    method, url, headers=outgoing, params=params, json=json, timeout=timeout
                )
            except httpx.TimeoutException:
                reason = f"timed out after {timeout:g} s"
            except httpx.HTTPError as exc:
                reason = describe_error(exc)
            else:
                span.set_attribute("http.response.status_code", response.status_code)
                if response.status_code >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                return response
            span.set_status(Status(StatusCode.ERROR, reason))
            span.set_attribute("error.type", "unreachable")
            raise UpstreamError(reason)


def describe_error(exc: httpx.HTTPError) -> str:
    """A short reason for a failed call, without the URL's query string or anything secret."""
    cause = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {cause}"[:300]


def public_url(url: str) -> str:
    """`url` as it may be shown or exported: no query string, no embedded credentials."""
    return str(mask("url", url.split("?", 1)[0]))
