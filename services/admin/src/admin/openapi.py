"""OpenAPI documentation of the admin API's error answers, so schema-driven clients expect every status."""

from __future__ import annotations

from http import HTTPStatus

import msgspec
from litestar.openapi.datastructures import ResponseSpec


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    """What went wrong."""

    message: str
    type: str
    code: str | None


class ErrorDocument(msgspec.Struct, frozen=True, kw_only=True):
    """The shared error shape of every Gatewayz service (`telemetry.errors`)."""

    error: ErrorDetail


_WHY = {
    400: "A query parameter is invalid.",
    401: "The admin key is missing or wrong.",
    429: "Too many attempts; retry after `Retry-After` seconds.",
    503: "ADMIN_API_KEY is not configured: admin endpoints refuse every request.",
}


def error_responses(*status_codes: int) -> dict[int, ResponseSpec]:
    """`responses=` documenting each status as the shared error document."""
    return {
        status: ResponseSpec(
            data_container=ErrorDocument,
            description=_WHY.get(status, HTTPStatus(status).phrase),
            generate_examples=False,
        )
        for status in status_codes
    }


ADMIN_RESPONSES = error_responses(401, 429, 503)
"""Every admin endpoint may answer these."""
ADMIN_WITH_QUERY_RESPONSES = error_responses(400, 401, 429, 503)
"""Admin endpoints that take query parameters."""
RATE_LIMITED_RESPONSES = error_responses(429)
"""Endpoints with a rate limit of their own."""
