"""`create_app(settings) -> Litestar`: the one place the gateway is wired."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from loguru import logger

from gateway.cache import COMPLETIONS_CACHE, Cache, CompletionCache, InProcessCache
from gateway.direct_route import serve_directly
from gateway.inference import InferenceService
from gateway.inference_metrics import InferenceMetrics
from gateway.keys import KeyGuard
from gateway.limits import InProcessLimiter, Limiter
from gateway.providers.base import Provider
from gateway.providers.catalog import Catalog, CatalogError, load_catalog
from gateway.providers.health import ProviderHealth
from gateway.providers.local import LocalProvider
from gateway.providers.openai import OpenAIProvider, create_http_client
from gateway.providers.router import Router
from gateway.routes.chat import chat_completions
from gateway.routes.keys import KEY_ROUTES
from gateway.routes.models import list_models
from gateway.routes.probes import ready
from gateway.routes.users import get_user
from gateway.services import GatewayServices
from gateway.settings import GatewaySettings
from gateway.store import (
    DEMO_USER_ID,
    Store,
    StoreConfigurationError,
    StoreMetrics,
    StoreUnavailable,
    open_store,
    write_demo_key,
)
from telemetry import Telemetry, health, instrument, load_settings_or_exit, metrics_endpoint
from telemetry.errors import EXCEPTION_HANDLERS

if TYPE_CHECKING:
    from gateway.redis_cache import RedisCompletionCache
    from telemetry.shared_redis import SharedRedis


def _load_catalog_or_exit(settings: GatewaySettings) -> Catalog:
    try:
        return load_catalog(settings.gateway_providers_file)
    except CatalogError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        raise SystemExit(2) from None


def create_app(settings: GatewaySettings | None = None, telemetry: Telemetry | None = None) -> Litestar:
    """The gateway app; settings from the environment unless given (tests pass them)."""
    settings = settings if settings is not None else load_settings_or_exit(GatewaySettings)
    catalog = _load_catalog_or_exit(settings)
    telemetry = telemetry if telemetry is not None else Telemetry.create(settings)
    health_by_provider = {
        provider.name: ProviderHealth(settings.gateway_provider_window_seconds)
        for provider in catalog.providers
    }
    metrics = InferenceMetrics(telemetry.registry, catalog, health_by_provider)
    store_metrics = StoreMetrics(telemetry.registry, "postgresql" if settings.database_url else "sqlite")
    redis: SharedRedis | None = None
    shared_cache: RedisCompletionCache | None = None
    limiter: Limiter
    cache: Cache
    if settings.redis_url:
        # Imported only with REDIS_URL: redis-py costs ~20 MB of RSS and ~0.6 s of start-up (BENCHMARKS.md).
        from gateway.redis_cache import RedisCompletionCache  # noqa: PLC0415
        from gateway.redis_limits import RedisLimiter  # noqa: PLC0415
        from telemetry.shared_redis import SharedRedis  # noqa: PLC0415

        redis = SharedRedis(settings.redis_url, telemetry.registry)
        limiter = RedisLimiter(redis)
        cache = shared_cache = RedisCompletionCache(
            redis,
            settings.gateway_cache_max_bytes,
            settings.gateway_cache_ttl_seconds,
            metrics.cache(COMPLETIONS_CACHE),
        )
    else:
        limiter = InProcessLimiter()
        cache = InProcessCache(
            CompletionCache(
                settings.gateway_cache_max_bytes,
                settings.gateway_cache_ttl_seconds,
                metrics.cache(COMPLETIONS_CACHE),
            )
        )

    @asynccontextmanager
    async def gateway_lifespan(app: Litestar) -> AsyncIterator[None]:
        """Open the user store and the pooled HTTP client; build providers, router and inference."""
        store = await _open_store(settings, store_metrics)
        client = create_http_client()
        providers: dict[str, Provider] = {
            provider.name: LocalProvider(provider.name)
            if provider.kind == "local"
            else OpenAIProvider(provider, client)
            for provider in catalog.providers
        }
        router = Router(providers, health_by_provider, metrics, telemetry.tracer)
        inference = InferenceService(
            catalog=catalog,
            router=router,
            store=store,
            cache=cache,
            metrics=metrics,
            log_event=telemetry.log_sink.write_event,
        )
        background = [asyncio.create_task(_maintain_periodically(store))]
        if shared_cache is not None:
            background.append(asyncio.create_task(_refresh_periodically(shared_cache)))
        app.state.services = GatewayServices(
            settings=settings,
            catalog=catalog,
            store=store,
            inference=inference,
            cache=cache,
            keys=KeyGuard(store, limiter, catalog, telemetry.registry),
            redis=redis,
        )
        logger.info(
            "Gateway ready",
            providers=[provider.name for provider in catalog.providers],
            models=sorted(catalog.routes),
            store=store.engine,
            cache=cache.kind,
        )
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await client.aclose()
            await store.close()
            if redis is not None:
                await redis.close()

    app = Litestar(
        route_handlers=[
            health,
            ready,
            metrics_endpoint(telemetry.registry),
            chat_completions,
            list_models,
            get_user,
            *KEY_ROUTES,
        ],
        lifespan=[telemetry.lifespan, gateway_lifespan],
        logging_config=None,
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(title="Gatewayz API", version=settings.service_version),
    )
    app.state.telemetry = telemetry
    serve_directly(app, "/v1/chat/completions")
    return instrument(app, telemetry)


async def _open_store(settings: GatewaySettings, metrics: StoreMetrics) -> Store:
    """The user store, with demo user 1; a generated demo key is written beside the DB, never logged.

    A PostgreSQL that refuses us (bad password, no such database) or never answers stops the start with one
    line naming DATABASE_URL.
    """
    try:
        store = await open_store(settings, metrics)
    except StoreConfigurationError as exc:
        _startup_error(f"DATABASE_URL: PostgreSQL refused the connection: {exc}")
        raise
    except StoreUnavailable:
        _startup_error(
            f"DATABASE_URL: PostgreSQL did not answer within GATEWAY_DB_CONNECT_SECONDS "
            f"({settings.gateway_db_connect_seconds:g} s)"
        )
        raise
    key = await store.ensure_demo_user(settings.gateway_demo_credits, settings.gateway_bootstrap_api_key)
    if key is not None:
        path = write_demo_key(settings.gateway_db_path, key)
        logger.info(
            "Demo API key created for user 1; read it from the file (shown once)",
            file=str(path),
            user_id=DEMO_USER_ID,
        )
        if sys.stderr.isatty():
            sys.stderr.write(f"\n  Demo API key for user {DEMO_USER_ID}: {key}\n  (saved to {path})\n\n")
    return store


def _startup_error(message: str) -> None:
    sys.stderr.write(f"configuration error: {message}\n")
    logger.error("Gateway cannot start", reason=message)


async def _maintain_periodically(store: Store) -> None:
    """The store's upkeep (commits, hold renewal and return) even when no request arrives to trigger it."""
    while True:
        await asyncio.sleep(store.maintenance_seconds)
        try:
            await store.maintain()
        except Exception as exc:  # noqa: BLE001 - a bug here must not stop upkeep for good
            logger.opt(exception=exc).error("Store upkeep failed")


async def _refresh_periodically(cache: RedisCompletionCache) -> None:
    """Keep `cache_size_bytes` on the shared total (other replicas store, entries expire)."""
    while True:
        await cache.refresh()
        await asyncio.sleep(cache.refresh_seconds)
