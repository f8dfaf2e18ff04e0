"""`GET /ready`: the gateway is ready to take traffic."""

from __future__ import annotations

from litestar import get


@get("/ready", sync_to_thread=False, tags=["health"])
def ready() -> dict[str, str]:
    """Ready once the app has started (providers and the user store join this check as they land)."""
    return {"status": "ready"}
