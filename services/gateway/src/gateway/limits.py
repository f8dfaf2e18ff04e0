"""Requests and tokens per minute for each key: token buckets, in-process or shared by every replica in Redis.

A key with `rpm` has a bucket of `rpm` requests that refills continuously at `rpm` per minute; with `tpm`, a
bucket of `tpm` tokens refilling at `tpm` per minute. A request is admitted only when both have room — one
request, and its worst case in tokens (the prompt plus the output limit, what credits reserve too) — and then
takes it from both at once. When the call ends the tokens it did not use go back (a cache hit or a failed call
gives them all back). So over any minute a key gets at most its limit plus what refilled meanwhile, never a
burst beyond the bucket, and the OpenAI headers follow from the buckets: `remaining` is what is in a bucket,
`reset` the time until it is full again (OpenAI's meaning: "until the limit resets to its initial state"),
`Retry-After` the time until the refused request would fit. A bucket is kept as what was *used* (decaying at
the limit's rate), not what is left, so a limit raised by PATCH applies to the very next request and a lowered
one makes the key wait until its use falls under it.

With `REDIS_URL` the buckets live in Redis (one hash per key and kind, Redis' clock, expiring once full) and a
Lua script checks and takes both in one atomic step, so N requests spread over any number of replicas never
get more than one bucket allows. That is one round trip per request: the tokens a call did not use are owed
to the key and go back with its next acquisition on this replica (a refund that waits only ever under-uses
the limit), and the call goes through the lean pipelined client (`telemetry.resp`), not redis-py, whose
~270 µs of CPU a call would be half a request's cost.

Redis down: each replica falls back to its own in-process buckets (the limit then holds per replica: at most
replicas times the limit), counted in `redis_unavailable_total{operation="rate_limit"}` and logged once per
10 s, never refusing a request because Redis is away.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.store import ApiKey

WINDOW_SECONDS = 60.0
"""Limits are per minute: an empty bucket is full again after this long."""
Kind = Literal["requests", "tokens"]
_PRUNE_EVERY = 4096


@dataclass(frozen=True, slots=True)
class Bucket:
    """One limit's state after a decision: its size, what is left, and seconds until it is full."""

    limit: int
    level: float

    @property
    def remaining(self) -> int:
        """Whole units left (`x-ratelimit-remaining-*`)."""
        return max(0, math.floor(self.level))

    @property
    def reset_seconds(self) -> float:
        """Until the bucket is full again (`x-ratelimit-reset-*`)."""
        return max(0.0, (self.limit - self.level) * WINDOW_SECONDS / self.limit)

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` fits (infinite when it is larger than the bucket)."""
        if amount > self.limit:
            return math.inf
        return max(0.0, (amount - self.level) * WINDOW_SECONDS / self.limit)


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request was admitted, the buckets afterwards, and (refused) what was short."""

    admitted: bool
    requests: Bucket | None
    tokens: Bucket | None
    tokens_wanted: int
    shared: bool
    """Decided in Redis (every replica's buckets) rather than this process's."""

    @property
    def exceeded(self) -> Kind | None:
        """The limit that refused the request (requests first), None when admitted."""
        if self.admitted:
            return None
        if self.requests is not None and self.requests.level < 1:
            return "requests"
        return "tokens"

    @property
    def retry_after(self) -> float:
        """Seconds until the refused request would fit; infinite if its tokens never can."""
        waits = [0.0]
        if self.requests is not None and self.requests.level < 1:
            waits.append(self.requests.wait_for(1))
        if self.tokens is not None and self.tokens.level < self.tokens_wanted:
            waits.append(self.tokens.wait_for(self.tokens_wanted))
        return max(waits)


class Limiter(Protocol):
    """Takes a request and its worst-case tokens from a key's buckets, and gives unused tokens back."""

    async def acquire(self, key: ApiKey, tokens: int) -> Decision:
        """Admit (and take) or refuse; a key without limits is always admitted with no buckets."""
        ...

    async def peek(self, key: ApiKey) -> Decision:
        """The buckets as they are, nothing taken (for the headers of a request refused before admission)."""
        ...

    def give_back(self, key: ApiKey, tokens: int, *, shared: bool) -> None:
        """Return `tokens` to the key's tokens bucket (what the call did not use; negative: an overrun)."""
        ...


def capacities(key: ApiKey) -> tuple[int, int]:
    """A key's (rpm, tpm); 0 where it has no limit."""
    return key.rpm or 0, key.tpm or 0


class InProcessLimiter:
    """Buckets in this process's memory (`REDIS_URL` unset, or Redis down); used from the event loop only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[int, Kind], tuple[float, float]] = {}
        """(key id, kind) → (what was used, when it was that much); a bucket's level is its limit minus it."""
        self._writes = 0

    def _level(self, key_id: int, kind: Kind, limit: int, now: float) -> float:
        entry = self._buckets.get((key_id, kind))
        if entry is None:
            return float(limit)
        used, at = entry
        return limit - max(0.0, used - (now - at) * limit / WINDOW_SECONDS)

    def _set(self, key_id: int, kind: Kind, limit: int, level: float, now: float) -> None:
        self._buckets[key_id, kind] = (limit - level, now)
        self._writes += 1
        if self._writes % _PRUNE_EVERY == 0:
            self._prune(now)

    def _prune(self, now: float) -> None:
        """Forget buckets untouched for a whole window: they are full again, as a missing bucket is."""
        stale = [name for name, (_, at) in self._buckets.items() if now - at >= WINDOW_SECONDS]
        for name in stale:
            del self._buckets[name]

    def decide(self, key: ApiKey, tokens: int, *, take: bool) -> Decision:
        """The decision and its buckets, synchronously (per request: a few dict operations)."""
        rpm, tpm = key.rpm or 0, key.tpm or 0
        now = self._clock()
        requests = self._level(key.id, "requests", rpm, now) if rpm else None
        available = self._level(key.id, "tokens", tpm, now) if tpm else None
        admitted = (requests is None or requests >= 1) and (available is None or available >= tokens)
        if admitted and take:
            buckets = self._buckets
            if requests is not None:
                requests -= 1
                buckets[key.id, "requests"] = (rpm - requests, now)
            if available is not None:
                available -= tokens
                buckets[key.id, "tokens"] = (tpm - available, now)
            self._writes += 1
            if self._writes % _PRUNE_EVERY == 0:
                self._prune(now)
        return Decision(
            admitted=admitted,
            requests=Bucket(rpm, requests) if requests is not None else None,
            tokens=Bucket(tpm, available) if available is not None else None,
            tokens_wanted=tokens,
            shared=False,
        )

    async def acquire(self, key: ApiKey, tokens: int) -> Decision:
        """Admit and take, or refuse."""
        return self.decide(key, tokens, take=True)

    async def peek(self, key: ApiKey) -> Decision:
        """The buckets, nothing taken."""
        return self.decide(key, 0, take=False)

    def give_back(self, key: ApiKey, tokens: int, *, shared: bool = False) -> None:  # noqa: ARG002 - the protocol's
        """Return unused tokens (never above the bucket's size)."""
        self.refund(key, tokens)

    def refund(self, key: ApiKey, tokens: int) -> None:
        """Return unused tokens (negative: take an overrun), synchronously."""
        if not key.tpm or tokens == 0:
            return
        now = self._clock()
        level = self._level(key.id, "tokens", key.tpm, now)
        self._set(key.id, "tokens", key.tpm, min(float(key.tpm), level + tokens), now)


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: `20ms`, `1s`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return "%dms" % math.ceil(seconds * 1000)  # noqa: UP031 - %-formatting is the cheapest here
    if seconds < 60:
        return "%gs" % round(seconds, 3)  # noqa: UP031
    minutes, rest = divmod(seconds, 60)
    return "%dm%gs" % (minutes, round(rest, 3))  # noqa: UP031
