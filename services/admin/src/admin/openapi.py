"""OpenAPI documentation of the admin API's error answers, so schema-driven clients expect every status."""

from __future__ import annotations

from telemetry.errors import error_responses

_WHY = {
    400: "A query parameter is invalid.",
    401: "The admin key is missing or wrong.",
    429: "Too many attempts; retry after `Retry-After` seconds.",
    503: "ADMIN_API_KEY is not configured: admin endpoints refuse every request.",
}


ADMIN_RESPONSES = error_responses(401, 429, 503, why=_WHY)
"""Every admin endpoint may answer these."""
ADMIN_WITH_QUERY_RESPONSES = error_responses(400, 401, 429, 503, why=_WHY)
"""Admin endpoints that take query parameters."""
RATE_LIMITED_RESPONSES = error_responses(429, why=_WHY)
"""Endpoints with a rate limit of their own."""
