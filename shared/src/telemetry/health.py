"""`GET /health`: liveness, the same on every service."""

from __future__ import annotations

from litestar import get


@get("/health", sync_to_thread=False, tags=["health"])
def health() -> dict[str, str]:
    """The process is up and serving requests."""
    return {"status": "ok"}
