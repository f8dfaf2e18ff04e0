"""`GET /api/users/{user_id}`: a public profile; balance and usage for the user's own key or the admin key."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from litestar import Request, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

from gateway.auth import bearer_key, is_admin, unauthorized
from gateway.services import services
from telemetry.errors import error_responses


@get("/api/users/{user_id:int}", tags=["users"], responses=error_responses(400, 401, 404, 503))
async def get_user(request: Request[Any, Any, Any], user_id: FromPath[int]) -> dict[str, Any]:
    """Anyone sees the profile; the user's own key or the admin key also sees credits; a bad key is 401."""
    gateway = services(request)
    key = bearer_key(request)
    privileged = False
    if key is not None:
        if is_admin(key, gateway.settings.admin_api_key):
            privileged = True
        else:
            owner = await gateway.store.authenticate(key) if key else None
            if owner is None:
                raise unauthorized("invalid API key")
            privileged = owner == user_id
    user = await gateway.store.user(user_id)
    if user is None:
        raise NotFoundException(f"user {user_id} not found")
    profile: dict[str, Any] = asdict(user)
    if privileged:
        profile["credits"] = await gateway.store.balance(user_id)
        profile["usage"] = [asdict(usage) for usage in await gateway.store.usage(user_id)]
    return profile
