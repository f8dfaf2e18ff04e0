"""`GET /ready`: the gateway is ready to take traffic."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from gateway.services import services


@get("/ready", sync_to_thread=False, tags=["health"])
def ready(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    """Ready once the user store answers and the providers are built."""
    try:
        services(request).store.user(1)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return Response({"status": "not ready", "reason": type(exc).__name__}, status_code=503)
    return Response({"status": "ready"})
