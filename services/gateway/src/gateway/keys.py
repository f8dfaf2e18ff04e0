"""What a key may do, checked per request: who it is, its model allow-list, its rate limits; and refusals.

`KeyGuard.caller()` authenticates (401 for a missing, unknown, revoked or expired key), `admit()` applies the
allow-list (403) and the rpm/tpm buckets (429, see `gateway.limits`), and the budget is the store's, in the
credit reservation itself (402). Every refusal for a key's limits (and a user's credits) is counted in
`gateway_limit_rejections_total{reason}` (the fixed `REASONS`), logged as one `Request refused` line with the
key's alias and user id (never the key), and recorded as an event on the request's span.

A key without rpm/tpm costs a dict lookup and two attribute reads here; a limited one a bucket decision (in
process, or one Redis script call) and its headers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from litestar.connection import ASGIConnection
from loguru import logger
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from gateway.auth import bearer_key, unauthorized
from gateway.limits import WINDOW_SECONDS, Decision, Limiter, duration
from gateway.providers.catalog import Catalog
from gateway.schema import ChatCompletionRequest
from gateway.store import ApiKey, KeyRefused, Store
from gateway.store.contract import key_expired, key_revoked
from gateway.tokens import count_prompt_tokens
from telemetry.errors import ApiError
from telemetry.loop_metrics import CounterChild, LoopCounter

REASONS: Final = (
    "rate_limit_requests",
    "rate_limit_tokens",
    "budget_exceeded",
    "insufficient_credits",
    "model_not_allowed",
    "key_revoked",
    "key_expired",
)
"""Every `reason` of `gateway_limit_rejections_total` (fixed: no label value comes from a client)."""
REFUSED_EVENT = "gatewayz.request.refused"
"""The span event a refusal adds to the request's server span."""
_MODEL_ECHO_LIMIT = 64


class Caller:
    """One request's key and, once admitted, what its rate limits took (for headers and the give-back)."""

    __slots__ = ("_finished", "_guard", "decision", "key")

    def __init__(self, key: ApiKey, guard: KeyGuard | None = None) -> None:
        self.key = key
        self.decision: Decision | None = None
        self._guard = guard
        self._finished = False

    @property
    def user_id(self) -> int:
        """The key's owner."""
        return self.key.user_id

    def headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI's `x-ratelimit-*` headers for the key's limits (none for a key without rpm/tpm)."""
        return rate_limit_headers(self.decision) if self.decision is not None else []

    def finished(self, tokens_used: int) -> None:
        """The request is over, having used `tokens_used` provider tokens (0: cache hit, failure); once."""
        if self._finished:
            return
        self._finished = True
        if self.decision is not None and self._guard is not None:
            self._guard.finished(self, tokens_used)


_HEADER_NAMES = {
    kind: tuple(f"x-ratelimit-{what}-{kind}".encode() for what in ("limit", "remaining", "reset"))
    for kind in ("requests", "tokens")
}


def rate_limit_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    """`x-ratelimit-limit-*`, `-remaining-*`, `-reset-*` for requests and tokens, as the buckets stand."""
    headers: list[tuple[bytes, bytes]] = []
    for kind, bucket in (("requests", decision.requests), ("tokens", decision.tokens)):
        if bucket is not None:
            limit, level = bucket.limit, bucket.level
            names = _HEADER_NAMES[kind]
            headers += (
                (names[0], b"%d" % limit),
                (names[1], b"%d" % (math.floor(level) if level > 0 else 0)),
                (names[2], duration(max(0.0, (limit - level) * WINDOW_SECONDS / limit)).encode()),
            )
    return headers


class RateLimited(ApiError):  # noqa: N818 - reads as the condition it reports, like the 429 it is
    """429 for a key over its rpm or tpm, in OpenAI's shape (`type` names the limit)."""

    def __init__(self, caller: Caller, decision: Decision) -> None:
        kind = decision.exceeded or "requests"
        bucket = decision.requests if kind == "requests" else decision.tokens
        limit = bucket.limit if bucket is not None else 0
        wait = decision.retry_after
        if math.isinf(wait):
            message = (
                f"Request too large for key {caller.key.alias!r} on tokens per min (TPM): limit {limit}, "
                f"requested {decision.tokens_wanted} (the prompt plus max_tokens); lower max_tokens"
            )
            wait = 60.0
        else:
            unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
            used = limit - (bucket.remaining if bucket is not None else 0)
            message = (
                f"Rate limit reached for key {caller.key.alias!r} on {unit}: limit {limit}, used {used}"
                + (f", requested {decision.tokens_wanted}" if kind == "tokens" else "")
                + f". Please try again in {duration(wait)}."
            )
        super().__init__(429, message, type_=kind, code="rate_limit_exceeded")
        self.reason = f"rate_limit_{kind}"
        self.headers = {
            "Retry-After": str(max(1, math.ceil(wait))),
            **{name.decode(): value.decode() for name, value in rate_limit_headers(decision)},
        }


class ModelNotAllowed(ApiError):  # noqa: N818 - reads as the condition it reports
    """403: the key's allow-list does not name the model."""

    def __init__(self, caller: Caller, model: str) -> None:
        allowed = ", ".join(sorted(caller.key.models or ()))
        super().__init__(
            403,
            f"model {model[:_MODEL_ECHO_LIMIT]!r} is not allowed for key {caller.key.alias!r}; "
            f"it may use: {allowed}",
            code="model_not_allowed",
        )
        self.reason = "model_not_allowed"


class KeyGuard:
    """Authentication, allow-list and rate limits of the chat route; counts, logs and traces refusals."""

    def __init__(
        self,
        store: Store,
        limiter: Limiter,
        catalog: Catalog,
        registry: CollectorRegistry,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.limiter = limiter
        self._catalog = catalog
        self._wall = wall
        rejections = LoopCounter(
            "gateway_limit_rejections",
            "Requests refused for their key's limits or their user's credits, by reason.",
            ["reason"],
            registry,
        )
        # Bound up front, so every reason is a series (at 0) before its first refusal.
        self._rejections: dict[str, CounterChild] = {reason: rejections.labels(reason) for reason in REASONS}

    async def caller(self, connection: ASGIConnection) -> Caller:  # type: ignore[type-arg]
        """The request's key; 401 (OpenAI shape) when missing, unknown, revoked or expired."""
        secret = bearer_key(connection)
        if not secret:
            raise unauthorized("missing API key: send Authorization: Bearer <key>")
        key = await self._store.lookup(secret)
        if key is None:
            raise unauthorized("invalid API key")
        caller = Caller(key, self)
        if key.revoked:
            raise self.refused(caller, key_revoked())
        if key.expires_at is not None and key.expired(self._wall()):
            raise self.refused(caller, key_expired())
        return caller

    async def admit(self, caller: Caller, request: ChatCompletionRequest) -> None:
        """403 for a model outside the key's allow-list, 429 over rpm/tpm; else its share is taken."""
        key = caller.key
        if key.models is not None and request.model not in key.models:
            raise self.refused(caller, ModelNotAllowed(caller, request.model), request.model)
        if not key.rate_limited:
            return
        routes = self._catalog.routes_for(request.model)
        if not routes:
            return  # a 404 follows; nothing to count against the limits
        tokens = 0
        if key.tpm is not None:
            output = request.output_limit or max(route.model.max_output_tokens for route in routes)
            tokens = count_prompt_tokens(request.messages) + output
        decision = await self.limiter.acquire(key, tokens)
        caller.decision = decision
        if not decision.admitted:
            raise self.refused(caller, RateLimited(caller, decision), request.model)

    def finished(self, caller: Caller, tokens_used: int) -> None:
        """The call is over: give the tokens it did not use back to the key's bucket (or take an overrun)."""
        decision = caller.decision
        if decision is None or decision.tokens is None or not decision.admitted:
            return
        unused = decision.tokens_wanted - tokens_used
        if unused != 0:
            self.limiter.give_back(caller.key, unused, shared=decision.shared)

    async def failed(self, caller: Caller, error: ApiError, model: str | None) -> None:
        """An error answer for a key's request: count a refusal, and give it the key's rate-limit headers."""
        gave_back = (
            caller.decision is not None and caller.decision.admitted and caller.decision.tokens is not None
        )
        caller.finished(0)  # refused after admission (budget, credits): no provider token was used
        reason = getattr(error, "reason", None)
        if reason is None and error.code == "insufficient_credits":
            reason = "insufficient_credits"
        if reason is not None and not isinstance(error, RateLimited | ModelNotAllowed):
            self.refused(
                caller, error, model, reason=reason
            )  # the store's refusals: budget, revoked, credits
        if not caller.key.rate_limited or (isinstance(error, KeyRefused) and error.status_code == 401):
            return
        if caller.decision is None or gave_back:  # the buckets as they are now, not at admission
            caller.decision = await self.limiter.peek(caller.key)
        headers = {name.decode(): value.decode() for name, value in caller.headers()}
        error.headers = {**headers, **(error.headers or {})}

    def refused(
        self, caller: Caller, error: ApiError, model: str | None = None, *, reason: str | None = None
    ) -> ApiError:
        """Count, log and trace a refusal; the error to raise."""
        reason = reason or str(getattr(error, "reason", ""))
        child = self._rejections.get(reason)
        if child is None:
            return error
        child.inc()
        key = caller.key
        fields = {
            "reason": reason,
            "status_code": error.status_code,
            "key_alias": key.alias,
            "key_id": key.id,
            "user_id": key.user_id,
        }
        if model is not None:
            fields["model"] = model[:_MODEL_ECHO_LIMIT]
        if error.headers and "Retry-After" in error.headers:
            fields["retry_after_seconds"] = int(error.headers["Retry-After"])
        logger.warning("Request refused", **fields)
        trace.get_current_span().add_event(
            REFUSED_EVENT,
            {
                "gatewayz.refusal.reason": reason,
                "gatewayz.key.alias": key.alias,
                "gatewayz.key.id": key.id,
                "enduser.id": str(key.user_id),
                "http.response.status_code": error.status_code,
            },
        )
        return error
