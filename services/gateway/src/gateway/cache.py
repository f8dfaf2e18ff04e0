"""The completion cache: the `Cache` contract and its in-process engine (an LRU bounded in bytes, with TTL).

With `REDIS_URL` the gateway uses `gateway.redis_cache.RedisCompletionCache` instead, shared by every
replica; both count `cache_hits_total`, `cache_misses_total` and report `cache_size_bytes` the same way.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import msgspec

from gateway.inference_metrics import CacheMetrics
from gateway.schema import ChatCompletionRequest

COMPLETIONS_CACHE = "completions"
"""The `cache_name` of the completion cache."""
ENTRY_OVERHEAD_BYTES = 200
"""Bytes charged per entry on top of its key and body: the dict slot, tuple and object headers."""

_KEY_ENCODER = msgspec.json.Encoder(order="deterministic")


@dataclass(frozen=True, slots=True)
class CachedCompletion:
    """A stored completion: its body and who served it."""

    body: bytes
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    expires: float

    @property
    def size(self) -> int:
        """Bytes this entry is charged for."""
        return len(self.body) + ENTRY_OVERHEAD_BYTES


def cache_key(request: ChatCompletionRequest) -> bytes:
    """Digest of everything that shapes the reply: model, messages and every parameter, in a fixed order."""
    return hashlib.sha256(_KEY_ENCODER.encode(request)).digest()


def is_cacheable(request: ChatCompletionRequest, *, opted_in: bool) -> bool:
    """Non-streaming requests that are deterministic (temperature 0) or whose client opted in."""
    return not request.stream and (opted_in or request.temperature == 0)


class Cache(Protocol):
    """What inference needs of a completion cache, in process or shared."""

    max_bytes: int
    kind: Literal["in-process", "redis"]

    async def get(self, key: bytes) -> CachedCompletion | None:
        """The live entry for `key`, counted as a hit or a miss (a cache that cannot answer: a miss)."""
        ...

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
        """Store a completion for the TTL, evicting as the bound requires (never failing the request)."""
        ...


class InProcessCache:
    """The `Cache` contract over one `CompletionCache`."""

    kind: Literal["in-process", "redis"] = "in-process"

    def __init__(self, lru: CompletionCache) -> None:
        self.lru = lru
        self.max_bytes = lru.max_bytes

    async def get(self, key: bytes) -> CachedCompletion | None:
        """The live entry for `key`."""
        return self.lru.get(key)

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
        """Store a completion in the LRU."""
        self.lru.put(
            key,
            body,
            provider=provider,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )


class CompletionCache:
    """LRU: a hit moves the entry to the back; inserts evict from the front until the bytes fit."""

    def __init__(
        self,
        max_bytes: int,
        ttl_seconds: float,
        metrics: CacheMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self._ttl = ttl_seconds
        self._metrics = metrics
        self._clock = clock
        self._entries: OrderedDict[bytes, CachedCompletion] = OrderedDict()
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> CachedCompletion | None:
        """The live entry for `key`, counted as a hit or a miss."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= self._clock():
            self._remove(key)
            entry = None
        if entry is None:
            self._metrics.misses.inc()
            return None
        self._entries.move_to_end(key)
        self._metrics.hits.inc()
        return entry

    def put(
        self,
        key: bytes,
        body: bytes,
        *,
        provider: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        """Store a completion, evicting least recently used entries until it fits (none over the bound)."""
        entry = CachedCompletion(
            body, provider, model, prompt_tokens, completion_tokens, self._clock() + self._ttl
        )
        charged = entry.size + len(key)
        if charged > self.max_bytes:
            return
        if key in self._entries:
            self._remove(key)
        while self._entries and self.size_bytes + charged > self.max_bytes:
            self._remove(next(iter(self._entries)))
        self._entries[key] = entry
        self.size_bytes += charged
        self._metrics.size_bytes.set(self.size_bytes)

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        self.size_bytes -= entry.size + len(key)
        self._metrics.size_bytes.set(self.size_bytes)
