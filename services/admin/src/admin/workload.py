"""`POST /api/metrics/test`: a small fixed workload through the gateway so every family has samples."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec

from admin.settings import AdminSettings
from admin.upstream import Upstream, UpstreamError, public_url

_REQUEST_TIMEOUT = 10.0
_PROMPT = "Synthetic workload from gatewayz-admin: reply with one short sentence."
# Deliberately wrong key: exercises the gateway's 401 path; obviously not a credential.
_WRONG_KEY = "synthetic-workload-wrong-key"


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One request the workload made."""

    method: str
    path: str
    purpose: str
    status_code: int | None = None
    duration_ms: float = 0.0
    error: str | None = None


class WorkloadResult(msgspec.Struct, frozen=True, kw_only=True):
    """What the workload did: every request, counts by status, and what it had to skip."""

    gateway_url: str
    model: str | None
    requests: list[Step]
    by_status: dict[str, int]
    skipped: list[str]
    duration_ms: float


class Workload:
    """Runs the fixed request sequence against the gateway, one request at a time (bounded by design)."""

    def __init__(self, upstream: Upstream, settings: AdminSettings) -> None:
        self._upstream = upstream
        self._base = settings.gateway_url.rstrip("/")
        self._key = settings.gateway_api_key
        self._model = settings.metrics_test_model

    async def run(self) -> WorkloadResult:
        """Users (200, 404), models, then chat completions: cache miss and hit, stream, 404 model, 401 key."""
        start = time.perf_counter()
        steps: list[Step] = []
        skipped: list[str] = []
        users = "/api/users/{user_id}"
        steps += [await self._send("GET", "/api/users/1", users, "user profile (200)") for _ in range(3)]
        steps.append(await self._send("GET", "/api/users/999999", users, "missing user (404)"))
        models_step, models = await self._models()
        steps.append(models_step)
        model = self._model or _pick_model(models)
        if model is None:
            skipped.append("chat completions: the gateway listed no model (set METRICS_TEST_MODEL)")
        elif not self._key:
            skipped.append("chat completions: GATEWAY_API_KEY is not set (use the gateway's bootstrap key)")
        else:
            steps += await self._chat(model)
        by_status = Counter(str(step.status_code) if step.status_code else "error" for step in steps)
        return WorkloadResult(
            gateway_url=public_url(self._base),
            model=model,
            requests=steps,
            by_status=dict(sorted(by_status.items())),
            skipped=skipped,
            duration_ms=round((time.perf_counter() - start) * 1000, 3),
        )

    async def _models(self) -> tuple[Step, list[dict[str, Any]]]:
        models: list[dict[str, Any]] = []

        def read(body: object) -> None:
            data = body.get("data") if isinstance(body, dict) else None
            models.extend(item for item in data or [] if isinstance(item, dict))

        # The gateway may require a key for its catalog, as OpenAI's does.
        headers = {"authorization": f"Bearer {self._key}"} if self._key else None
        step = await self._send(
            "GET", "/v1/models", "/v1/models", "model catalog", on_json=read, headers=headers
        )
        return step, models

    async def _chat(self, model: str) -> list[Step]:
        path = "/v1/chat/completions"
        # temperature 0 makes the completion deterministic, so the gateway caches it: a miss, then a hit.
        body = {
            "model": model,
            "messages": [{"role": "user", "content": _PROMPT}],
            "max_tokens": 16,
            "temperature": 0,
        }
        auth = {"authorization": f"Bearer {self._key}"}
        wrong = {"authorization": f"Bearer {_WRONG_KEY}"}
        return [
            await self._send("POST", path, path, "completion (cache miss)", json=body, headers=auth),
            await self._send("POST", path, path, "same completion (cache hit)", json=body, headers=auth),
            await self._send(
                "POST", path, path, "streamed completion", json={**body, "stream": True}, headers=auth
            ),
            await self._send(
                "POST",
                path,
                path,
                "unknown model (404)",
                json={**body, "model": "no-such-model"},
                headers=auth,
            ),
            await self._send("POST", path, path, "wrong key (401)", json=body, headers=wrong),
        ]

    async def _send(
        self,
        method: str,
        path: str,
        route: str,
        purpose: str,
        *,
        on_json: Callable[[object], None] | None = None,
        json: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Step:
        start = time.perf_counter()
        try:
            response = await self._upstream.request(
                method, self._base + path, route=route, timeout=_REQUEST_TIMEOUT, json=json, headers=headers
            )
        except UpstreamError as exc:
            elapsed = round((time.perf_counter() - start) * 1000, 3)
            return Step(method=method, path=path, purpose=purpose, duration_ms=elapsed, error=exc.reason)
        elapsed = round((time.perf_counter() - start) * 1000, 3)
        if on_json is not None and response.status_code == 200:
            with contextlib.suppress(ValueError):
                on_json(response.json())
        return Step(
            method=method, path=path, purpose=purpose, status_code=response.status_code, duration_ms=elapsed
        )


def _pick_model(models: list[dict[str, Any]]) -> str | None:
    """The first model the local provider serves, else the first model listed."""
    ids = [(str(item.get("id")), str(item.get("owned_by", ""))) for item in models if item.get("id")]
    for model_id, owner in ids:
        if "local" in owner.lower() or model_id.lower().startswith("local"):
            return model_id
    return ids[0][0] if ids else None
