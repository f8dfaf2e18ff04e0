"""`GET /ready`: the gateway is ready to take traffic."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from gateway.services import services


@get("/ready", tags=["health"])
async def ready(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    """Ready once the user store answers; a Redis that does not answer only degrades the cache (still 200)."""
    gateway = services(request)
    try:
        await gateway.store.user(1)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return Response(
            {"status": "not ready", "reason": type(exc).__name__, "store": gateway.store.engine},
            status_code=503,
        )
    body = {"status": "ready", "store": gateway.store.engine, "cache": gateway.cache.kind}
    if gateway.redis is not None:
        body["redis"] = "ok" if await gateway.redis.ping() else "unavailable"
    return Response(body)
