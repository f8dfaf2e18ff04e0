"""The long-lived objects the gateway's handlers use, built in the app's lifespan and kept on `app.state`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from litestar.connection import ASGIConnection

from gateway.cache import Cache
from gateway.inference import InferenceService
from gateway.keys import KeyGuard
from gateway.providers.catalog import Catalog
from gateway.settings import GatewaySettings
from gateway.store import Store

if TYPE_CHECKING:
    from telemetry.shared_redis import SharedRedis


@dataclass(frozen=True, slots=True)
class GatewayServices:
    """Settings, catalog, user store, cache, inference and the key checks, as handlers need them."""

    settings: GatewaySettings
    catalog: Catalog
    store: Store
    inference: InferenceService
    cache: Cache
    keys: KeyGuard
    redis: SharedRedis | None = None


def services(connection: ASGIConnection) -> GatewayServices:  # type: ignore[type-arg]
    """The services of the app serving `connection`."""
    found: GatewayServices = connection.app.state.services
    return found
