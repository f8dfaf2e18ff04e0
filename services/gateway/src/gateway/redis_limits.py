"""The rate limits' buckets in Redis (`REDIS_URL`), shared by every replica: `gateway.limits` describes them.

Its own module so that a gateway without `REDIS_URL` never imports redis-py (~20 MB of RSS and ~0.6 s of
start-up, `telemetry.resp` and `telemetry.shared_redis` need it): `gateway.app` imports this one only when
Redis is configured.
"""

from __future__ import annotations

from gateway.limits import Bucket, Decision, InProcessLimiter, capacities
from gateway.store import ApiKey
from telemetry.resp import Script
from telemetry.shared_redis import REDIS_ERRORS, SharedRedis

_MAX_OWED = 100_000

# Each bucket is a hash {u: what was used, t: when (ms, Redis' clock)}; its level is the limit minus the use,
# which decays at the limit's rate. KEYS: requests bucket, tokens bucket. ARGV: rpm (0: none), tpm (0: none),
# tokens wanted, 1 take / 0 peek, tokens owed back to the bucket first (stored only when taking). Returns
# {admitted 1/0, requests level, tokens level}, levels as strings (Lua numbers would become integers).
_ACQUIRE = Script("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local window = 60000
local function level(key, limit)
    local v = redis.call('HMGET', key, 'u', 't')
    if not v[1] then
        return limit
    end
    return limit - math.max(0, tonumber(v[1]) - (now - tonumber(v[2])) * limit / window)
end
local function store(key, limit, value)
    local used = limit - value
    redis.call('HSET', key, 'u', string.format('%.6f', used), 't', string.format('%.3f', now))
    redis.call('PEXPIRE', key, math.ceil(used * window / limit) + 1000)
end
local rpm, tpm, wanted, owed = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local requests, tokens = -1, -1
if rpm > 0 then
    requests = level(KEYS[1], rpm)
end
if tpm > 0 then
    tokens = math.min(tpm, level(KEYS[2], tpm) + owed)
end
local admitted = (rpm == 0 or requests >= 1) and (tpm == 0 or tokens >= wanted)
if admitted and ARGV[4] == '1' then
    if rpm > 0 then
        requests = requests - 1
        store(KEYS[1], rpm, requests)
    end
    if tpm > 0 then
        tokens = tokens - wanted
        store(KEYS[2], tpm, tokens)
    end
elseif ARGV[4] == '1' and tpm > 0 and owed ~= 0 then
    store(KEYS[2], tpm, tokens)
end
return {admitted and 1 or 0, string.format('%.6f', requests), string.format('%.6f', tokens)}
""")
_OPERATION = "rate_limit"


def _names(key_id: int) -> list[str]:
    # One hash tag per key: both buckets on one Redis Cluster slot, so one script may touch both.
    return [f"gatewayz:limit:{{{key_id}}}:requests", f"gatewayz:limit:{{{key_id}}}:tokens"]


class RedisLimiter:
    """The buckets in Redis, shared by every replica; this process's buckets while Redis is down."""

    def __init__(self, redis: SharedRedis, fallback: InProcessLimiter | None = None) -> None:
        self._redis = redis
        self.fallback = fallback or InProcessLimiter()
        self._owed: dict[int, int] = {}
        """Tokens owed back to each key's shared bucket, sent with its next acquisition."""

    async def _decide(self, key: ApiKey, tokens: int, *, take: bool) -> Decision:
        rpm, tpm = capacities(key)
        if not self._redis.available(_OPERATION):
            return self.fallback.decide(key, tokens, take=take)
        # Taking sends what is owed (it is then stored); a peek only counts it in.
        owed = (self._owed.pop(key.id, 0) if take else self._owed.get(key.id, 0)) if tpm else 0
        try:
            reply = await self._redis.lean.evalsha(
                _ACQUIRE, _names(key.id), [rpm, tpm, tokens, int(take), owed]
            )
            admitted, requests, available = reply  # type: ignore[misc]
        except REDIS_ERRORS as exc:
            self._redis.failure(_OPERATION, exc)
            return self.fallback.decide(key, tokens, take=take)
        self._redis.success()
        return Decision(
            admitted=int(admitted) == 1,
            requests=Bucket(rpm, float(requests)) if rpm else None,
            tokens=Bucket(tpm, float(available)) if tpm else None,
            tokens_wanted=tokens,
            shared=True,
        )

    async def acquire(self, key: ApiKey, tokens: int) -> Decision:
        """One script call: admit and take from both buckets, or refuse."""
        return await self._decide(key, tokens, take=True)

    async def peek(self, key: ApiKey) -> Decision:
        """The buckets, nothing taken."""
        return await self._decide(key, 0, take=False)

    def give_back(self, key: ApiKey, tokens: int, *, shared: bool) -> None:
        """Return unused tokens where they were taken: the shared bucket, or this process's.

        To the shared bucket they go with the key's next request here (lost if none comes: it refills anyway).
        """
        if not key.tpm or tokens == 0:
            return
        if not shared:
            self.fallback.refund(key, tokens)
            return
        if len(self._owed) >= _MAX_OWED and key.id not in self._owed:
            self._owed.clear()  # refunds of idle keys: forgetting them only under-uses a limit
        self._owed[key.id] = max(-key.tpm, min(key.tpm, self._owed.get(key.id, 0) + tokens))
