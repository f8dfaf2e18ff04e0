"""The admin key guard: Bearer `ADMIN_API_KEY`, constant-time, failed attempts limited per client."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from loguru import logger

from admin.limiter import SharedWindow
from telemetry.errors import ApiError

SECURITY_SCHEME = "AdminBearer"
"""Name of the OpenAPI security scheme the admin endpoints declare."""
ADMIN_SECURITY: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
"""`security=` for admin route handlers."""
GENERATE_KEY_HINT = (
    "admin endpoints are disabled until ADMIN_API_KEY is set; generate one with "
    "python3 -c \"import secrets; print('gw_admin_' + secrets.token_urlsafe(24))\" "
    "and set it in the admin service's environment"
)


class AdminKeyGuard:
    """A Litestar guard: 503 with no key configured, 429 when a client failed too often, 401 on a bad key."""

    def __init__(self, key: str | None, failures: SharedWindow) -> None:
        self._key = key.encode() if key else None
        self._failures = failures

    async def __call__(
        self, connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler
    ) -> None:
        """Let the request through, or raise the error that says why not."""
        if self._key is None:
            raise ApiError(503, GENERATE_KEY_HINT, type_="configuration_error", code="admin_key_not_set")
        client = connection.client.host if connection.client else "unknown"
        wait = await self._failures.retry_after(client)
        if wait:
            error = ApiError(
                429,
                f"too many failed admin authentications; retry in {wait} s",
                code="too_many_failed_authentications",
            )
            error.headers = {"Retry-After": str(wait)}
            raise error
        presented = _bearer_token(connection.headers.get("authorization"))
        # compare_digest on bytes takes time independent of where the two differ.
        if presented is None or not hmac.compare_digest(presented.encode(), self._key):
            await self._failures.hit(client)
            logger.warning(
                "Admin authentication failed",
                client=client,
                reason="missing key" if presented is None else "wrong key",
                endpoint=connection.scope.get("path", ""),
            )
            error = ApiError(
                401,
                "missing admin key: send Authorization: Bearer <ADMIN_API_KEY>"
                if presented is None
                else "invalid admin key",
                code="invalid_admin_key",
            )
            error.headers = {"WWW-Authenticate": 'Bearer realm="gatewayz-admin"'}
            raise error


def _bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def require_admin_key(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Route guard for admin endpoints: delegates to the app's `AdminKeyGuard` (built from its settings)."""
    guard: AdminKeyGuard = connection.app.state.admin.guard
    await guard(connection, handler)


ADMIN_GUARDS = [require_admin_key]
"""`guards=` for admin route handlers."""
