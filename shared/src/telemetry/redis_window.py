"""A sliding-window limit kept in Redis, so every replica of a service counts the same events.

The same window as admin's in-process `SlidingWindowLimiter`: at most `limit` events per key in any
`window` seconds, the wait being until the oldest of them leaves the window. Each key is a sorted set of
event times (Redis' clock, so replicas' clocks need not agree), trimmed and read in one script and expiring
with the window, so idle keys cost nothing.
"""

from __future__ import annotations

import math
import secrets

from telemetry.shared_redis import SharedRedis

# KEYS[1]: the key's sorted set. ARGV[1]: window in ms. ARGV[2]: limit. Returns the wait in ms (0: may act).
_RETRY_AFTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
    return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""
# KEYS[1]: the key's sorted set. ARGV[1]: window in ms. ARGV[2]: a unique member. Records one event now.
_HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return now
"""


class RedisSlidingWindow:
    """`limit` events per `window` seconds for each key, shared through Redis; raises what Redis raises."""

    def __init__(self, redis: SharedRedis, prefix: str, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._prefix = prefix
        self._window_ms = math.ceil(window * 1000)
        self._retry_after = redis.client.register_script(_RETRY_AFTER)
        self._hit = redis.client.register_script(_HIT)

    async def retry_after(self, key: str) -> int:
        """Seconds until `key` may act again; 0 when it may act now."""
        wait_ms = int(await self._retry_after(keys=[self._prefix + key], args=[self._window_ms, self.limit]))
        return 0 if wait_ms == 0 else max(1, math.ceil(wait_ms / 1000))

    async def hit(self, key: str) -> None:
        """Record one event for `key`."""
        await self._hit(keys=[self._prefix + key], args=[self._window_ms, secrets.token_hex(8)])
