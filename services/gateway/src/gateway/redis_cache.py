"""The completion cache in Redis (`REDIS_URL`): one cache for every replica, with the same TTL and byte bound.

A miss on replica A is a hit on replica B. Each entry is a Redis string with the TTL as its expiry
(`SET ... PX`), so a lookup is one `GET`. The byte bound keeps its in-process meaning across all replicas
together: `GATEWAY_CACHE_MAX_BYTES` bounds the bytes the entries are charged for (body + key + 200 per
entry), and `cache_size_bytes` is that shared total, the same on every replica. One Lua script per store
keeps the account: it forgets entries that expired, drops the entry closest to expiring (the oldest: every
entry lives the same TTL) until the new one fits, and never keeps an entry larger than the bound. Unlike the
in-process LRU a hit does not make an entry younger — recency would need a write per hit.

The account can only overstate what Redis holds: an entry Redis itself evicted (its `maxmemory` policy) or
that someone deleted stays counted until its TTL ends. All keys share the hash tag `{gatewayz:completions}`.

Redis down: the lookup is skipped and counted as a miss (and in `redis_unavailable_total`), the request is
served by its provider, nothing is stored; see `telemetry.shared_redis`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.cache import ENTRY_OVERHEAD_BYTES, CachedCompletion
from gateway.inference_metrics import CacheMetrics
from telemetry.shared_redis import REDIS_ERRORS, SharedRedis

PREFIX = "{gatewayz:completions}:"
_ENTRY = PREFIX + "e:"
_INDEX = PREFIX + "index"  # sorted set: entry digest -> expiry (ms, Redis clock)
_SIZES = PREFIX + "sizes"  # hash: entry digest -> bytes charged
_TOTAL = PREFIX + "bytes"  # the bytes charged for every entry, all replicas together

# Shared by both scripts: forget entries that expired (at most 200 per call, so no call takes long).
_FORGET_EXPIRED = """
local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function drop(digest)
    local size = tonumber(redis.call('HGET', KEYS[3], digest) or '0')
    redis.call('HDEL', KEYS[3], digest)
    redis.call('ZREM', KEYS[2], digest)
    redis.call('DEL', ARGV[1] .. digest)
    if size > 0 then
        redis.call('DECRBY', KEYS[4], size)
    end
end
local now = now_ms()
for _, digest in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 200)) do
    drop(digest)
end
"""
# KEYS: index, index, sizes, total (KEYS[1] unused, so both scripts share one layout).
# ARGV: entry key prefix, digest, value, ttl ms, bytes charged, bound. Returns the new total.
_PUT = (
    _FORGET_EXPIRED
    + """
local digest, size, bound = ARGV[2], tonumber(ARGV[5]), tonumber(ARGV[6])
if size > bound then
    return tonumber(redis.call('GET', KEYS[4]) or '0')
end
if redis.call('HEXISTS', KEYS[3], digest) == 1 then
    drop(digest)
end
local total = tonumber(redis.call('GET', KEYS[4]) or '0')
while total + size > bound do
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
    if #oldest == 0 then
        break
    end
    drop(oldest[1])
    total = tonumber(redis.call('GET', KEYS[4]) or '0')
end
redis.call('SET', ARGV[1] .. digest, ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), digest)
redis.call('HSET', KEYS[3], digest, size)
return redis.call('INCRBY', KEYS[4], size)
"""
)
# Same KEYS; ARGV: entry key prefix. Returns the total after forgetting what expired.
_REFRESH = _FORGET_EXPIRED + "\nreturn tonumber(redis.call('GET', KEYS[4]) or '0')\n"
_KEYS = [_INDEX, _INDEX, _SIZES, _TOTAL]


class _Entry(msgspec.Struct, array_like=True, frozen=True):
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    body: bytes


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Entry)


class RedisCompletionCache:
    """The `Cache` contract in Redis, shared by every replica."""

    kind: Literal["in-process", "redis"] = "redis"
    refresh_seconds = 5.0
    """How often `refresh()` should run (so `cache_size_bytes` follows expiries and other replicas)."""

    def __init__(self, redis: SharedRedis, max_bytes: int, ttl_seconds: float, metrics: CacheMetrics) -> None:
        self.max_bytes = max_bytes
        self._redis = redis
        self._ttl_ms = max(1, round(ttl_seconds * 1000))
        self._metrics = metrics
        self._put = redis.client.register_script(_PUT)
        self._refresh = redis.client.register_script(_REFRESH)

    async def get(self, key: bytes) -> CachedCompletion | None:
        """One GET; Redis down or a value that does not decode counts as a miss."""
        if not self._redis.available("cache_get"):
            self._metrics.misses.inc()
            return None
        try:
            raw = await self._redis.client.get(_ENTRY + key.hex())
        except REDIS_ERRORS as exc:
            self._redis.failure("cache_get", exc)
            self._metrics.misses.inc()
            return None
        self._redis.success()
        if raw is None:
            self._metrics.misses.inc()
            return None
        try:
            entry = _DECODER.decode(raw if isinstance(raw, bytes) else raw.encode())
        except msgspec.DecodeError:  # written by another version, or by hand: not ours to serve
            self._metrics.misses.inc()
            return None
        self._metrics.hits.inc()
        return CachedCompletion(
            entry.body, entry.provider, entry.model, entry.prompt_tokens, entry.completion_tokens, expires=0.0
        )

    async def put(
        self,
        key: bytes,
        body: bytes,
        *,
        provider: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        """Store for the TTL through the accounting script; a Redis failure only skips the store."""
        charged = len(body) + ENTRY_OVERHEAD_BYTES + len(key)
        if charged > self.max_bytes or not self._redis.available("cache_put"):
            return
        value = _ENCODER.encode(_Entry(provider, model, prompt_tokens, completion_tokens, body))
        try:
            total = await self._put(
                keys=_KEYS, args=[_ENTRY, key.hex(), value, self._ttl_ms, charged, self.max_bytes]
            )
        except REDIS_ERRORS as exc:
            self._redis.failure("cache_put", exc)
            return
        self._redis.success()
        self._metrics.size_bytes.set(int(total))

    async def refresh(self) -> None:
        """Forget expired entries and read the shared total into `cache_size_bytes`."""
        if not self._redis.available("cache_refresh"):
            return
        try:
            total = await self._refresh(keys=_KEYS, args=[_ENTRY])
        except REDIS_ERRORS as exc:
            self._redis.failure("cache_refresh", exc)
            return
        self._redis.success()
        self._metrics.size_bytes.set(int(total))
