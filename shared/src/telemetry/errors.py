"""One JSON error shape for every service, OpenAI's `{"error": {...}}`; never a stack trace."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap
from loguru import logger

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_credits",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(HTTPException):
    """An HTTP error with an explicit OpenAI-style `type` and `code`."""

    def __init__(
        self, status_code: int, message: str, *, type_: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(detail=message, status_code=status_code)
        self.type = type_ or error_type(status_code)
        self.code = code


def error_type(status_code: int) -> str:
    """The OpenAI-style `type` for a status code."""
    if status_code >= 500:
        return "server_error" if status_code == 500 else "upstream_error"
    return _TYPES.get(status_code, "invalid_request_error")


def error_body(
    status_code: int, message: str, *, type_: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The error document."""
    return {"error": {"message": message, "type": type_ or error_type(status_code), "code": code}}


def _validation_message(exc: ValidationException) -> str:
    """Name the offending field(s): Litestar puts them in `extra` as [{"key": ..., "message": ...}]."""
    parts = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            key, message = item.get("key"), item.get("message")
            parts.append(f"{key}: {message}" if key else str(message))
    detail = exc.detail or "Validation failed"
    return f"{detail}: {'; '.join(parts)}" if parts else detail


def http_exception_handler(_request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """4xx/5xx raised on purpose, in the shared shape."""
    if isinstance(exc, ValidationException):
        message = _validation_message(exc)
    else:
        message = exc.detail or HTTPStatus(exc.status_code).phrase
    type_ = getattr(exc, "type", None)
    code = getattr(exc, "code", None)
    return Response(
        error_body(exc.status_code, message, type_=type_, code=code),
        status_code=exc.status_code,
        headers=exc.headers,
    )


def unhandled_exception_handler(_request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A bug: log it with its traceback, answer 500 without one."""
    logger.opt(exception=exc).error("Unhandled exception")
    return Response(error_body(500, "Internal server error"), status_code=500)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HTTPException: http_exception_handler,
    Exception: unhandled_exception_handler,
}
"""Pass as `Litestar(exception_handlers=...)`."""


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    """What went wrong."""

    message: str
    type: str
    code: str | None


class ErrorDocument(msgspec.Struct, frozen=True, kw_only=True):
    """The error shape of every Gatewayz service, as OpenAPI documents it."""

    error: ErrorDetail


def error_responses(*status_codes: int, why: Mapping[int, str] | None = None) -> dict[int, ResponseSpec]:
    """`responses=` for a route: each status documented as the shared error document."""
    reasons = why or {}
    return {
        status: ResponseSpec(
            data_container=ErrorDocument,
            description=reasons.get(status, HTTPStatus(status).phrase),
            generate_examples=False,
        )
        for status in status_codes
    }
