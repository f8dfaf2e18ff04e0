"""A small async httpx load loop, and what a process costs: RSS and CPU from /proc."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

CLK_TCK = os.sysconf("SC_CLK_TCK")

RequestSpec = tuple[str, str, dict[str, Any]]
"""(method, path, httpx keyword arguments) of one request."""


@dataclass
class LoadResult:
    """What one bounded burst of requests got back."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Requests answered (any status)."""
        return sum(self.statuses.values())

    @property
    def throughput(self) -> float:
        """Answered requests per second of wall time."""
        return self.count / self.elapsed if self.elapsed else 0.0

    @property
    def server_errors(self) -> int:
        """5xx answers."""
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def p50_ms(self) -> float:
        """Median latency in ms."""
        return statistics.median(self.latencies) * 1000 if self.latencies else 0.0


async def _send(client: httpx.AsyncClient, request: RequestSpec, result: LoadResult) -> None:
    """One request, its status and latency (or its transport error) recorded in `result`."""
    method, path, kwargs = request
    started = time.perf_counter()
    try:
        response = await client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        result.errors[type(exc).__name__] += 1
        return
    result.latencies.append(time.perf_counter() - started)
    result.statuses[response.status_code] += 1


async def _drive(
    base_url: str,
    spec: Callable[[int], RequestSpec],
    total: int,
    concurrency: int,
    timeout: float,
    *,
    deadline_seconds: float | None = None,
) -> LoadResult:
    result = LoadResult()
    deadline = time.perf_counter() + deadline_seconds if deadline_seconds is not None else float("inf")
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:

        async def worker() -> None:
            for index in counter:
                if time.perf_counter() >= deadline:
                    return
                await _send(client, spec(index), result)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.elapsed = time.perf_counter() - started
    return result


def run_load(
    base_url: str,
    spec: Callable[[int], RequestSpec],
    total: int,
    *,
    concurrency: int = 8,
    timeout: float = 10.0,
) -> LoadResult:
    """Send `total` requests (`spec(i)` says which), `concurrency` at a time, as fast as they are answered."""
    return asyncio.run(_drive(base_url, spec, total, concurrency, timeout))


async def _paced(
    base_url: str, spec: Callable[[int], RequestSpec], rate: float, seconds: float, timeout: float
) -> LoadResult:
    """Open loop: a request every 1/rate s for `seconds`, each its own task (a slow answer delays none)."""
    result = LoadResult()
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as client:

        async def one(index: int) -> None:
            await _send(client, spec(index), result)

        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        index = 0
        while (due := start + index / rate) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            task = asyncio.create_task(one(index))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += 1
        await asyncio.gather(*tasks)
        result.elapsed = time.perf_counter() - start
    return result


def run_paced(
    base_url: str, spec: Callable[[int], RequestSpec], rate: float, seconds: float, *, timeout: float = 10.0
) -> LoadResult:
    """Send requests at a fixed `rate` per second for `seconds` (open loop), wait for every answer."""
    return asyncio.run(_paced(base_url, spec, rate, seconds, timeout))


def run_for(
    base_url: str,
    spec: Callable[[int], RequestSpec],
    seconds: float,
    *,
    concurrency: int = 8,
    timeout: float = 10.0,
) -> LoadResult:
    """Closed loop for `seconds`: `concurrency` requests always in flight, a new one as each is answered."""
    return asyncio.run(_drive(base_url, spec, 10**9, concurrency, timeout, deadline_seconds=seconds))


def rss_mb(pid: int) -> float:
    """Resident set size of `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def series(metrics_text: str) -> set[str]:
    """The series (name and labels, without the value) in a Prometheus text exposition."""
    found = set()
    for line in metrics_text.splitlines():
        if line and not line.startswith("#"):
            found.add(line.rsplit(" ", 1)[0])
    return found


def median_range(values: list[float], digits: int = 3) -> str:
    """`median (min-max)`, the way TARGETS.md reports figures."""
    low, mid, high = (round(value, digits) for value in (min(values), statistics.median(values), max(values)))
    return f"{mid} ({low}-{high})"
