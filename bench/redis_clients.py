"""Client CPU per Redis script call: redis-py's asyncio client against `telemetry.resp`, side by side.

    uv run python bench/redis_clients.py [--rounds 5] [--calls 3000]

The call is the gateway's rate-limit script (`gateway.limits`, one key with rpm and tpm), sent to Debian's
redis-server (private, on CPU 1) from one uvloop event loop pinned to CPU 0: one call at a time, then 16 at
once (a gateway serving 16 requests). CPU = this process's user+system time over the calls ÷ calls (Redis's
own time is not in it). The clients alternate within each round; medians (min-max) over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from harness import summary

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from redis.asyncio import Redis  # noqa: E402

from gateway.redis_limits import _ACQUIRE, _names  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402
from telemetry.resp import RespClient  # noqa: E402

ARGS = [1_000_000_000, 1_000_000_000_000, 100, 1, 0]


async def cpu_per_call(call: Callable[[], Awaitable[object]], calls: int, at_once: int) -> float:
    for _ in range(50):  # warm-up: connections open, the script loaded
        await call()
    started = time.process_time()
    for _ in range(calls // at_once):
        if at_once == 1:
            await call()
        else:
            await asyncio.gather(*(call() for _ in range(at_once)))
    return (time.process_time() - started) / calls * 1e6


async def measure(url: str, calls: int) -> dict[str, float]:
    redis_py = Redis.from_url(url)
    script = redis_py.register_script(_ACQUIRE.source.decode())
    lean = RespClient(url)
    keys = _names(1)
    figures = {}
    for at_once in (1, 16):
        figures[f"redis-py, {at_once} at once"] = await cpu_per_call(
            lambda: script(keys=keys, args=ARGS), calls, at_once
        )
        figures[f"resp, {at_once} at once"] = await cpu_per_call(
            lambda: lean.evalsha(_ACQUIRE, keys, ARGS), calls, at_once
        )
    lean.close()
    await redis_py.aclose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    server = RedisServer().start()
    assert server.process is not None
    os.sched_setaffinity(server.process.pid, {1})
    os.sched_setaffinity(0, {0})
    print(f"load average before: {os.getloadavg()}", flush=True)
    results: dict[str, list[float]] = {}
    try:
        for round_no in range(args.rounds):
            for name, value in uvloop.run(measure(server.url(), args.calls)).items():
                results.setdefault(name, []).append(value)
                print(f"round {round_no + 1} {name:22}: {value:6.1f} us CPU per call", flush=True)
    finally:
        server.destroy()
    print(f"load average after: {os.getloadavg()}")
    for name, values in results.items():
        print(f"{name:22} {summary(values, '{:.1f}')} us CPU per call")


if __name__ == "__main__":
    main()
