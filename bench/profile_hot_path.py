"""Profile the instrumented request path in-process (no network): where does per-request CPU go?

uv run python bench/profile_hot_path.py [bare|full] [N]
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from instrumented_server import build


async def drive(app, n: int) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/noop",
        "raw_path": b"/noop",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"x"), (b"user-agent", b"wrk")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_m):
        return None

    for _ in range(n):
        await app(dict(scope, state={}), receive, send)


def main() -> None:
    variant = sys.argv[1] if len(sys.argv) > 1 else "full"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    otlp = "http://127.0.0.1:14318" if variant == "full" else None
    app = build(variant, otlp)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    asyncio.run(drive(app, 1000))
    started = time.perf_counter()
    asyncio.run(drive(app, n))
    elapsed = time.perf_counter() - started
    sys.stderr.write(f"{variant}: {elapsed / n * 1e6:.1f} us/request (unprofiled)\n")
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(drive(app, n))
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
    sys.stderr.write(out.getvalue())


if __name__ == "__main__":
    main()
