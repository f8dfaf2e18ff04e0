"""Bearer API keys: who is calling, and whether it is the admin."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection

from telemetry.errors import ApiError

_SCHEME = "bearer "


def header(connection: ASGIConnection, name: bytes) -> str | None:  # type: ignore[type-arg]
    """The first value of a request header (`name` lower-case), read straight from the ASGI scope.

    Litestar's `connection.headers` builds a multi-dict of every header first; the hot routes need two.
    """
    for key, value in connection.scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def bearer_key(connection: ASGIConnection) -> str | None:  # type: ignore[type-arg]
    """The key in `Authorization: Bearer <key>`; None when the header is absent, "" when it is malformed."""
    header_value = header(connection, b"authorization")
    if header_value is None:
        return None
    if header_value[: len(_SCHEME)].lower() != _SCHEME:
        return ""
    return header_value[len(_SCHEME) :].strip()


def is_admin(key: str, admin_key: str | None) -> bool:
    """`key` is the configured admin key (constant-time; never true when none is configured)."""
    return admin_key is not None and hmac.compare_digest(key.encode(), admin_key.encode())


def unauthorized(message: str) -> ApiError:
    """401 in the OpenAI shape, with the challenge header."""
    error = ApiError(401, message, code="invalid_api_key")
    error.headers = {"WWW-Authenticate": 'Bearer realm="gatewayz"'}
    return error
