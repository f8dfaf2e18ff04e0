"""`create_app(settings) -> Litestar`: the one place the admin service is wired."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar, Request, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from admin.auth import SECURITY_SCHEME
from admin.routes.instrumentation import InstrumentationController
from admin.routes.metrics import MetricsController
from admin.routes.readiness import ready
from admin.settings import AdminSettings
from admin.state import AdminState
from admin.upstream import Upstream
from telemetry import Telemetry, health, instrument, load_settings_or_exit, metrics_endpoint
from telemetry.errors import EXCEPTION_HANDLERS


async def _record_scrape(request: Request[Any, Any, Any]) -> None:
    """Note that `/metrics` was read, for `/api/metrics/status`."""
    request.app.state.admin.scrapes.seen()


@asynccontextmanager
async def _redis_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Close the shared Redis client (the failed-auth limit's) at shutdown, if there is one."""
    try:
        yield
    finally:
        state: AdminState = app.state.admin
        if state.redis is not None:
            await state.redis.close()


def create_app(
    settings: AdminSettings | None = None,
    telemetry: Telemetry | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Litestar:
    """The admin app; settings from the environment unless given; `transport` routes its calls (tests)."""
    settings = settings if settings is not None else load_settings_or_exit(AdminSettings)
    telemetry = telemetry if telemetry is not None else Telemetry.create(settings)
    upstream = Upstream(telemetry.tracer, transport=transport)
    metrics = Router(
        path="/", route_handlers=[metrics_endpoint(telemetry.registry)], after_response=_record_scrape
    )
    app = Litestar(
        route_handlers=[health, ready, metrics, MetricsController, InstrumentationController],
        lifespan=[telemetry.lifespan, upstream.lifespan, _redis_lifespan],
        logging_config=None,
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(
            title="Gatewayz Admin API",
            version=settings.service_version,
            components=Components(
                security_schemes={
                    SECURITY_SCHEME: SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="ADMIN_API_KEY, as `Authorization: Bearer <key>`",
                    )
                }
            ),
        ),
    )
    app.state.admin = AdminState.create(settings, telemetry, upstream)
    return instrument(app, telemetry)
