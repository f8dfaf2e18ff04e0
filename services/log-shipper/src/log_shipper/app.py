"""`create_app(settings) -> Litestar`: the one place the log-shipper is wired."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.openapi import OpenAPIConfig

from log_shipper.sender import Pusher
from log_shipper.settings import ShipperSettings
from log_shipper.shipper import LogShipper
from log_shipper.sources.http import ingest_route
from log_shipper.sources.own import OwnLogTransport
from telemetry import Telemetry, health, instrument, load_settings_or_exit, metrics_endpoint
from telemetry.errors import EXCEPTION_HANDLERS


@get("/ready", sync_to_thread=False, tags=["health"])
def ready(request: Request[Any, Any, Any]) -> Response[dict[str, object]]:
    """200 when reading and shipping; 503 while Loki fails (lines are still spooled). Says if Loki is off."""
    shipper: LogShipper = request.app.state.shipper
    ok, details = shipper.readiness()
    return Response({"status": "ready" if ok else "degraded", **details}, status_code=200 if ok else 503)


def create_app(
    settings: ShipperSettings | None = None, telemetry: Telemetry | None = None, pusher: Pusher | None = None
) -> Litestar:
    """The log-shipper app; settings from the environment unless given; `pusher` replaces Loki in tests."""
    settings = settings if settings is not None else load_settings_or_exit(ShipperSettings)
    telemetry = telemetry if telemetry is not None else Telemetry.create(settings)
    shipper = LogShipper(settings, telemetry.registry, pusher)
    own_logs = None
    if settings.shipper_own_logs:
        own_logs = OwnLogTransport(shipper.batcher, settings.service_name)
        telemetry.forward_logs(own_logs)

    @asynccontextmanager
    async def run_shipper(_app: Litestar) -> AsyncIterator[None]:
        if own_logs is not None:
            own_logs.bind(asyncio.get_running_loop())
        await shipper.start()
        try:
            yield
        finally:
            await shipper.stop()

    app = Litestar(
        route_handlers=[
            health,
            ready,
            metrics_endpoint(telemetry.registry),
            ingest_route(settings.shipper_ingest_max_bytes),
        ],
        lifespan=[telemetry.lifespan, run_shipper],
        logging_config=None,
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(title="Gatewayz log shipper", version=settings.service_version),
    )
    app.state.telemetry = telemetry
    app.state.shipper = shipper
    app.state.batcher = shipper.batcher
    app.state.default_service = shipper.default_service
    return instrument(app, telemetry)
