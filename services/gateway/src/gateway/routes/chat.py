"""`POST /v1/chat/completions`: OpenAI's chat completions, JSON or SSE."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, post
from litestar.types import ASGIApp

from gateway.auth import header
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
    403,
    404,
    413,
    429,
    502,
    503,
    504,
    why={
        400: "The body is not a valid chat completion request (the message names the field).",
        401: "The API key is missing, wrong, revoked or expired.",
        402: "The user's credits, or the key's budget, cannot cover the request's worst case.",
        403: "The key's model allow-list does not name the model.",
        404: "The model is not in the catalog.",
        413: "The body is larger than 10,000,000 bytes.",
        429: "The key is over its requests or tokens per minute (Retry-After), or the provider is limiting.",
        502: "Every provider for the model failed or answered garbage.",
        503: "The user store (PostgreSQL) cannot be reached; nothing was charged.",
        504: "The provider timed out.",
    },
)


MAX_BODY_BYTES = 10_000_000
"""Largest request body (Litestar's default): a bigger one is a 413."""


async def read_body(request: Request[Any, Any, Any], limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, straight from ASGI `receive`.

    `request.body()` first builds Litestar's header multi-dict to read `Content-Length`, then streams
    through an async generator: ~8 % of this route's CPU. uvicorn already holds the body to its
    `Content-Length`; only the bound is checked here.
    """
    receive = request.receive
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body: bytes = message.get("body", b"")
        if len(body) > limit:
            raise ApiError(413, f"request body larger than {limit} bytes", code="request_too_large")
        return body
    parts: list[bytes] = []
    size = 0
    while message["type"] == "http.request":
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise ApiError(413, f"request body larger than {limit} bytes", code="request_too_large")
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)
        message = await receive()
    raise ApiError(400, "the client disconnected before sending the whole body", code="incomplete_body")


@post(
    "/v1/chat/completions",
    tags=["inference"],
    status_code=200,
    responses=CHAT_ERRORS,
    request_max_body_size=MAX_BODY_BYTES,
)
async def chat_completions(request: Request[Any, Any, Any]) -> ASGIApp:
    """A completion for the caller's key; `stream: true` answers as server-sent events.

    A key with rpm/tpm gets OpenAI's `x-ratelimit-*` headers on every answer, errors included.
    """
    gateway = services(request)
    caller = await gateway.keys.caller(request)
    model = None
    try:
        try:
            chat = REQUEST_DECODER.decode(await read_body(request))
        except msgspec.MsgspecError as exc:
            raise ApiError(400, describe_validation_error(exc), code="invalid_request_body") from None
        model = chat.model
        await gateway.keys.admit(caller, chat)
        if chat.stream:
            return EventStream(await gateway.inference.stream(caller, chat), caller.headers())
        opted_in = (header(request, _CACHE_HEADER_NAME) or "").lower() in _TRUE
        result = await gateway.inference.complete(caller, chat, cache_opt_in=opted_in)
    except ApiError as exc:
        await gateway.keys.failed(caller, exc, model)
        raise
    return JsonAnswer(result.body, [_CACHE_HIT if result.cache_hit else _CACHE_MISS, *caller.headers()])
