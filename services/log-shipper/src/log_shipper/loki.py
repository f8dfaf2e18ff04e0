"""`LokiClient`: one gzip JSON push to Loki's `/loki/api/v1/push`, its answer classified for delivery."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import time
import zlib
from dataclasses import dataclass
from enum import Enum

import httpx

from log_shipper.metrics import ShipperMetrics
from log_shipper.settings import ShipperSettings


class Outcome(Enum):
    """What to do with a batch after one push."""

    SHIPPED = "shipped"
    RETRY = "retry"
    SPLIT = "split"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class PushResult:
    """One push's outcome; `retry_after` in seconds when Loki asked for it; `reason` for metrics and logs."""

    outcome: Outcome
    status: int | None
    reason: str
    retry_after: float | None = None
    detail: str = ""
    sent_bytes: int = 0


def auth_headers(settings: ShipperSettings) -> dict[str, str]:
    """Tenant and credentials for hosted Loki, from the settings."""
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    if settings.loki_tenant_id:
        headers["X-Scope-OrgID"] = settings.loki_tenant_id
    if settings.loki_username:
        credentials = f"{settings.loki_username}:{settings.loki_password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
    elif settings.loki_bearer_token:
        headers["Authorization"] = f"Bearer {settings.loki_bearer_token}"
    return headers


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


class LokiClient:
    """Pushes bodies gzipped at level 1 (the CPU-cheapest useful level) over one connection pool."""

    def __init__(
        self, settings: ShipperSettings, metrics: ShipperMetrics, client: httpx.AsyncClient | None = None
    ) -> None:
        self.url = settings.loki_push_url
        self.metrics = metrics
        self._headers = auth_headers(settings)
        self._client = client or httpx.AsyncClient(timeout=settings.loki_timeout_seconds)

    async def push(self, body: bytes) -> PushResult:
        """POST `body` gzipped; classify Loki's answer (or the connection error)."""
        compressed = await asyncio.to_thread(zlib.compress, body, 1, 31)
        started = time.perf_counter()
        try:
            response = await self._client.post(self.url, content=compressed, headers=self._headers)
        except httpx.HTTPError as exc:
            self.metrics.push_duration.observe(time.perf_counter() - started)
            return PushResult(Outcome.RETRY, None, "connection", detail=f"{type(exc).__name__}: {exc}")
        self.metrics.push_duration.observe(time.perf_counter() - started)
        return classify(response, len(compressed))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def classify(response: httpx.Response, sent_bytes: int) -> PushResult:
    """2xx shipped; 429/5xx retried (with `Retry-After`); 413 split; any other 4xx rejected, never retried."""
    status = response.status_code
    if 200 <= status < 300:
        return PushResult(Outcome.SHIPPED, status, "ok", sent_bytes=sent_bytes)
    detail = response.text[:500].strip()
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        reason = "429" if status == 429 else "5xx"
        return PushResult(Outcome.RETRY, status, reason, retry_after=retry_after, detail=detail)
    if status == 413:
        return PushResult(Outcome.SPLIT, status, "too_large", detail=detail)
    # A 400 may have stored part of the batch (Loki keeps the good entries): retrying it whole is wrong.
    return PushResult(Outcome.REJECTED, status, "loki_rejected", detail=detail)
