"""Python calls per request (or per relayed chunk) of the gateway in front of an OpenAI-compatible upstream.

    uv run python bench/upstream_calls.py [--requests 300] [--mode json|stream] [--per-chunk] [--top 40]
        [--chunk-interval-ms 2]

`python -m gateway` runs under `cProfile` (the catalog, full telemetry and upstream of
`bench/upstream_overhead.py`), N then 3N keep-alive requests over one connection in two fresh runs; each
function's call count in the second run minus the first, ÷ 2N, is its calls per request (start-up and
shutdown cancel out). `--per-chunk` compares streams of 20 and 60 chunks instead (same N): calls per relayed
chunk, the chunks `--chunk-interval-ms` apart so that each is read and relayed alone, as a model's are.
Call counts, not times: cProfile's clock is inflated by its own hooks, and methods compiled by Cython
(uvloop's transports) are not calls it sees, so their time lands in their caller. The list says which
Python functions run how often on the path, which is what instruction counts cannot name.
"""

from __future__ import annotations

import argparse
import pstats
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import first_connection, free_port, upstream_command
from upstream_instructions import exchange
from upstream_overhead import BODIES, CATALOG, gateway_env

HERE = Path(__file__).resolve().parent
Counts = dict[str, int]


def _name(key: tuple[str, int, str]) -> str:
    path, line, function = key
    if path == "~":
        return f"builtin {function}"
    for marker in ("site-packages/", "/src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{line} {function}"


def profiled_calls(mode: str, chunks: int, requests: int, interval_ms: float) -> Counts:
    """Calls of each function over one gateway run serving `requests` (after one warm-up request)."""
    workdir = Path(tempfile.mkdtemp(prefix="upstream-calls-"))
    upstream_port, sink_port, gateway_port = free_port(), free_port(), free_port()
    (workdir / "catalog.toml").write_text(CATALOG.format(port=upstream_port))
    upstream = subprocess.Popen(upstream_command(upstream_port, chunks, interval_ms))
    sink = subprocess.Popen([sys.executable, str(HERE / "otlp_sink.py"), str(sink_port)])
    profile = workdir / "gateway.prof"
    gateway = subprocess.Popen(
        [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "gateway"],
        env=gateway_env(gateway_port, workdir, f"http://127.0.0.1:{sink_port}", {}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    body = BODIES[mode]
    try:
        connection = first_connection(gateway_port, lambda conn: exchange(conn, body), gateway)
        for _ in range(requests):
            exchange(connection, body)
        connection.close()
    finally:
        gateway.send_signal(signal.SIGINT)  # a graceful exit is what makes cProfile write its file
        try:
            gateway.wait(60)
        except subprocess.TimeoutExpired:
            gateway.kill()
            raise
        finally:
            sink.kill()
            upstream.kill()
    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    return {_name(key): int(row[1]) for key, row in stats.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--mode", choices=sorted(BODIES), default="json")
    parser.add_argument("--per-chunk", action="store_true", help="streams of 20 against 60 chunks")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--chunk-interval-ms", type=float, default=2.0)
    args = parser.parse_args()
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if args.per_chunk:
        small = profiled_calls("stream", 20, args.requests, args.chunk_interval_ms)
        large = profiled_calls("stream", 60, args.requests, args.chunk_interval_ms)
        units, unit = 40 * (args.requests + 1), "chunk"  # + the warm-up request
    else:
        small = profiled_calls(args.mode, 20, args.requests, args.chunk_interval_ms)
        large = profiled_calls(args.mode, 20, 3 * args.requests, args.chunk_interval_ms)
        units, unit = 2 * args.requests, "request"
    per_unit = {name: (large.get(name, 0) - small.get(name, 0)) / units for name in set(small) | set(large)}
    kept = {name: calls for name, calls in per_unit.items() if calls >= 0.5}
    python = sum(calls for name, calls in kept.items() if not name.startswith("builtin "))
    builtin = sum(calls for name, calls in kept.items() if name.startswith("builtin "))
    label = f"{args.mode}" if not args.per_chunk else "stream"
    print(f"{label}: {python:.1f} Python function calls and {builtin:.1f} builtin calls per {unit}")
    for name, calls in sorted(kept.items(), key=lambda item: (-item[1], item[0]))[: args.top]:
        print(f"{calls:8.2f}  {name}")


if __name__ == "__main__":
    main()
