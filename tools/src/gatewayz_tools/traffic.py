"""`make traffic`: bounded synthetic traffic through the gateway, so every dashboard series has data.

    python -m gatewayz_tools.traffic [--gateway URL] [--requests 600] [--concurrency 8] [--seed 1]

A fixed mix: chat completions across the catalog's models (fast, slow, flaky, streamed, cached), user
lookups, and deliberate errors (unknown model 404, bad body 400, bad key 401, unknown path 404). It stops
after `--requests` requests and prints a summary table.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from gatewayz_tools.localenv import local_key, url

Scenario = Callable[[httpx.AsyncClient, "Plan", random.Random], Awaitable[int]]


@dataclass(slots=True)
class Plan:
    """What the traffic knows about the gateway it drives."""

    api_key: str
    models: list[str]

    def auth(self) -> dict[str, str]:
        """The Authorization header with the configured key."""
        return {"authorization": f"Bearer {self.api_key}"}

    def model(self, hint: str, rng: random.Random) -> str:
        """A catalog model whose name contains `hint`, else any."""
        matching = [model for model in self.models if hint in model]
        return rng.choice(matching or self.models)


def _chat_body(model: str, rng: random.Random, **extra: object) -> dict[str, object]:
    words = " ".join(rng.choice(["latency", "tokens", "trace", "cache", "loki", "tempo"]) for _ in range(8))
    return {"model": model, "messages": [{"role": "user", "content": f"Tell me about {words}"}], **extra}


async def chat(client: httpx.AsyncClient, plan: Plan, rng: random.Random, hint: str) -> int:
    """A non-streaming completion on a model matching `hint`."""
    body = _chat_body(plan.model(hint, rng), rng, temperature=0.7)
    return (await client.post("/v1/chat/completions", json=body, headers=plan.auth())).status_code


async def stream(client: httpx.AsyncClient, plan: Plan, rng: random.Random) -> int:
    """A streamed completion, read to `[DONE]`."""
    body = _chat_body(plan.model("fast", rng), rng, stream=True)
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=plan.auth()) as response:
        async for _ in response.aiter_lines():
            pass
        return response.status_code


async def cached(client: httpx.AsyncClient, plan: Plan, rng: random.Random) -> int:
    """The same temperature-0 request every time: cache hits after the first."""
    body = {
        "model": plan.model("fast", rng),
        "messages": [{"role": "user", "content": "cached hello"}],
        "temperature": 0,
    }
    return (await client.post("/v1/chat/completions", json=body, headers=plan.auth())).status_code


async def user(client: httpx.AsyncClient, _plan: Plan, rng: random.Random) -> int:
    """A profile lookup: mostly the demo user, sometimes one that does not exist."""
    user_id = 1 if rng.random() < 0.8 else rng.randint(1000, 9999)
    return (await client.get(f"/api/users/{user_id}")).status_code


async def unknown_model(client: httpx.AsyncClient, plan: Plan, rng: random.Random) -> int:
    """A model outside the catalog: 404."""
    body = _chat_body(f"no-such-model-{rng.randint(1, 10**6)}", rng)
    return (await client.post("/v1/chat/completions", json=body, headers=plan.auth())).status_code


async def bad_body(client: httpx.AsyncClient, plan: Plan, _rng: random.Random) -> int:
    """A body missing `messages`: 400."""
    return (await client.post("/v1/chat/completions", json={"model": "x"}, headers=plan.auth())).status_code


async def bad_key(client: httpx.AsyncClient, plan: Plan, rng: random.Random) -> int:
    """A wrong API key: 401."""
    headers = {"authorization": "Bearer not-a-real-key"}
    body = _chat_body(plan.model("fast", rng), rng)
    return (await client.post("/v1/chat/completions", json=body, headers=headers)).status_code


async def not_found(client: httpx.AsyncClient, _plan: Plan, rng: random.Random) -> int:
    """A path no route serves: 404 under one `path` label."""
    return (await client.get(f"/no/such/page/{rng.randint(1, 10**6)}")).status_code


SCENARIOS: dict[str, tuple[float, Scenario]] = {
    "chat fast": (30, lambda c, p, r: chat(c, p, r, "fast")),
    "chat flaky": (14, lambda c, p, r: chat(c, p, r, "flaky")),
    "chat slow": (4, lambda c, p, r: chat(c, p, r, "slow")),
    "chat stream": (14, stream),
    "chat cached": (10, cached),
    "user lookup": (12, user),
    "unknown model": (4, unknown_model),
    "bad body": (4, bad_body),
    "bad key": (3, bad_key),
    "unknown path": (5, not_found),
}
"""Scenario name -> (weight, coroutine)."""


@dataclass(slots=True)
class Tally:
    """Outcomes per scenario."""

    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    done: int = 0

    def record(self, name: str, status: int, seconds: float) -> None:
        """One finished request."""
        self.statuses[name][status] += 1
        self.latencies[name].append(seconds)
        self.done += 1

    def table(self) -> str:
        """The closing summary: count, statuses and latency percentiles per scenario."""
        rows = [f"{'scenario':16} {'count':>6} {'p50 ms':>8} {'p95 ms':>8}  statuses"]
        for name in SCENARIOS:
            if not (latencies := sorted(self.latencies.get(name, []))):
                continue
            p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
            statuses = " ".join(f"{code}x{n}" for code, n in sorted(self.statuses[name].items()))
            p50 = statistics.median(latencies)
            rows.append(f"{name:16} {len(latencies):6d} {p50 * 1000:8.1f} {p95 * 1000:8.1f}  {statuses}")
        return "\n".join(rows)


def _progress(done: int, total: int) -> None:
    """A bar redrawn in place on a terminal; a line per tenth otherwise (CI logs, pipes)."""
    width = 30
    filled = width * done // total
    if sys.stderr.isatty():
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    elif done * 10 // total != (done - 10) * 10 // total or done == total:
        sys.stderr.write(f"{done}/{total} requests\n")
    sys.stderr.flush()


async def drive(base_url: str, api_key: str, requests: int, concurrency: int, seed: int) -> Tally:
    """Send `requests` requests with `concurrency` workers; transport errors count as status 0."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible mix, not security
    names = list(SCENARIOS)
    weights = [SCENARIOS[name][0] for name in names]
    queue = rng.choices(names, weights, k=requests)
    tally = Tally()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.get("/v1/models", headers={"authorization": f"Bearer {api_key}"})
        if response.status_code != 200:
            sys.stderr.write(f"GET /v1/models answered {response.status_code}: is the API key right?\n")
        models = (
            [model["id"] for model in response.json().get("data", [])] if response.status_code == 200 else []
        )
        plan = Plan(api_key=api_key, models=models or ["gatewayz-fast"])

        async def worker() -> None:
            while queue:
                name = queue.pop()
                started = time.perf_counter()
                try:
                    status = await SCENARIOS[name][1](client, plan, rng)
                except httpx.HTTPError:
                    status = 0
                tally.record(name, status, time.perf_counter() - started)
                if tally.done % 10 == 0 or tally.done == requests:
                    _progress(tally.done, requests)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    return tally


def main(argv: list[str] | None = None) -> int:
    """Parse flags, drive traffic, print the summary; exit 1 if the gateway could not be reached."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gateway", default=url("gateway"), help="gateway base URL (GATEWAY_URL)")
    parser.add_argument(
        "--api-key", default=None, help="API key (GATEWAY_API_KEY, else .run/gateway-api-key)"
    )
    parser.add_argument("--requests", type=int, default=600, help="how many requests in total")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--seed", type=int, default=1, help="seed of the scenario mix")
    args = parser.parse_args(argv)
    api_key = args.api_key or local_key("gateway-api-key", "gw_")
    try:
        tally = asyncio.run(drive(args.gateway, api_key, args.requests, args.concurrency, args.seed))
    except httpx.HTTPError as exc:
        sys.stderr.write(f"cannot reach the gateway at {args.gateway}: {exc}\n  start it with `make run`\n")
        return 1
    sys.stdout.write(tally.table() + "\n")
    failed = sum(n for counter in tally.statuses.values() for code, n in counter.items() if code == 0)
    return 1 if failed == tally.done else 0


if __name__ == "__main__":
    raise SystemExit(main())
