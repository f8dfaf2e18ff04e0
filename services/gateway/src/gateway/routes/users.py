"""`GET /api/users/{user_id}`: a user's public profile."""

from __future__ import annotations

from litestar import get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

# The demo user store; the SQLite-backed one replaces it with the inference issue.
_USERS = {1: {"id": 1, "username": "demo", "created_at": "2025-01-01T00:00:00Z"}}


@get("/api/users/{user_id:int}", sync_to_thread=False, tags=["users"])
def get_user(user_id: FromPath[int]) -> dict[str, object]:
    """A user's public profile; 404 when there is none."""
    user = _USERS.get(user_id)
    if user is None:
        raise NotFoundException(f"user {user_id} not found")
    return user
