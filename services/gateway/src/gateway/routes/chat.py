"""`POST /v1/chat/completions`: OpenAI's chat completions, JSON or SSE."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, post
from litestar.types import ASGIApp

from gateway.auth import bearer_key, header, unauthorized
from gateway.responses import EventStream, JsonAnswer
from gateway.schema import REQUEST_DECODER, describe_validation_error
from gateway.services import services
from telemetry.errors import ApiError, error_responses

CACHE_HEADER = "x-gatewayz-cache"
"""Request: `true` opts a non-zero-temperature request into the cache. Response: `hit` or `miss`."""
_TRUE = frozenset({"1", "true", "yes", "on"})
_CACHE_HEADER_NAME = CACHE_HEADER.encode()
_CACHE_HIT = (CACHE_HEADER.encode(), b"hit")
_CACHE_MISS = (CACHE_HEADER.encode(), b"miss")


CHAT_ERRORS = error_responses(
    400,
    401,
    402,
    404,
    429,
    502,
    504,
    why={
        400: "The body is not a valid chat completion request (the message names the field).",
        401: "The API key is missing or wrong.",
        402: "The user's credits cannot cover the request's worst case.",
        404: "The model is not in the catalog.",
        429: "The provider is rate limiting.",
        502: "Every provider for the model failed or answered garbage.",
        504: "The provider timed out.",
    },
)


@post("/v1/chat/completions", tags=["inference"], status_code=200, responses=CHAT_ERRORS)
async def chat_completions(request: Request[Any, Any, Any]) -> ASGIApp:
    """A completion for the caller's key; `stream: true` answers as server-sent events."""
    gateway = services(request)
    key = bearer_key(request)
    if not key:
        raise unauthorized("missing API key: send Authorization: Bearer <key>")
    user_id = gateway.store.authenticate(key)
    if user_id is None:
        raise unauthorized("invalid API key")
    try:
        chat = REQUEST_DECODER.decode(await request.body())
    except msgspec.MsgspecError as exc:
        raise ApiError(400, describe_validation_error(exc), code="invalid_request_body") from None
    if chat.stream:
        return EventStream(await gateway.inference.stream(user_id, chat))
    opted_in = (header(request, _CACHE_HEADER_NAME) or "").lower() in _TRUE
    result = await gateway.inference.complete(user_id, chat, cache_opt_in=opted_in)
    return JsonAnswer(result.body, [_CACHE_HIT if result.cache_hit else _CACHE_MISS])
