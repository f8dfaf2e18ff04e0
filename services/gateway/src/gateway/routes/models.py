"""`GET /v1/models`: the catalog's models, OpenAI's list shape, with prices."""

from __future__ import annotations

from typing import Any

from litestar import Request, get

from gateway.auth import bearer_key, unauthorized
from gateway.services import services
from telemetry.errors import error_responses


@get("/v1/models", tags=["inference"], responses=error_responses(401, 503))
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Every model id once, owned by its first provider, with the providers serving it and its prices."""
    gateway = services(request)
    key = bearer_key(request)
    if not key or await gateway.store.authenticate(key) is None:
        raise unauthorized("missing or invalid API key")
    data = [
        {
            "id": model_id,
            "object": "model",
            "created": 0,
            "owned_by": routes[0].provider.name,
            "providers": [route.provider.name for route in routes],
            "pricing": {
                "prompt": routes[0].model.prompt_price,
                "completion": routes[0].model.completion_price,
            },
        }
        for model_id, routes in gateway.catalog.routes.items()
    ]
    return {"object": "list", "data": data}
