"""`GET /ready`: the admin service is ready once started; the parts it watches never make it unready."""

from __future__ import annotations

from litestar import get


@get("/ready", sync_to_thread=False, tags=["health"])
def ready() -> dict[str, str]:
    """Ready: the admin API must answer precisely when the rest of the stack does not."""
    return {"status": "ready"}
