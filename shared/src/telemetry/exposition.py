"""`GET /metrics`: OpenMetrics (with exemplars) when the scraper asks for it, classic text otherwise."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder


def metrics_endpoint(registry: CollectorRegistry, path: str = "/metrics") -> HTTPRouteHandler:
    """A route handler serving `registry` with content negotiation on `Accept`."""

    @get(path, include_in_schema=False, sync_to_thread=False, name="metrics")
    def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), media_type=content_type)

    return metrics
