"""`create_app(settings) -> Litestar`: the one place the gateway is wired."""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi import OpenAPIConfig

from gateway.routes.probes import ready
from gateway.routes.users import get_user
from gateway.settings import GatewaySettings
from telemetry import Telemetry, health, instrument, load_settings_or_exit, metrics_endpoint
from telemetry.errors import EXCEPTION_HANDLERS


def create_app(settings: GatewaySettings | None = None, telemetry: Telemetry | None = None) -> Litestar:
    """The gateway app; settings from the environment unless given (tests pass them)."""
    settings = settings if settings is not None else load_settings_or_exit(GatewaySettings)
    telemetry = telemetry if telemetry is not None else Telemetry.create(settings)
    app = Litestar(
        route_handlers=[health, ready, metrics_endpoint(telemetry.registry), get_user],
        lifespan=[telemetry.lifespan],
        logging_config=None,
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(title="Gatewayz API", version=settings.service_version),
    )
    app.state.telemetry = telemetry
    return instrument(app, telemetry)
