"""The gateway's RSS over a soak on the path users run: before an OpenAI-compatible upstream, full telemetry.

    uv run python bench/memory_soak.py [--seconds 600] [--venv image|dev] [--connections 32] [--tempo up|down]

TARGETS.md: under 80 MB per service under load, flat over a 10-minute soak. Set up as
`bench/upstream_overhead.py` is (`bench/openai_upstream.py` on loopback, the `openai`-kind bench catalog,
spans exported over OTLP/HTTP to `bench/otlp_sink.py`, access and inference lines on stdout, the gateway
pinned to CPU 0, the rest on CPU 1), with two `wrk` loads at once for `--seconds`: non-streaming completions
over three quarters of the connections, 20-chunk streams over the rest.

`--tempo down` points the exporter at a port nothing listens on (Tempo down: each batch fails and is
dropped). `--venv image` (the default) runs the gateway from a virtualenv built as its image builds it
(`uv sync --frozen --no-dev --package gatewayz-gateway --no-editable`, in a temporary directory; uv's cache
serves it offline); `--venv dev` from the development one (dev dependencies such as pydantic loaded too).

Prints RSS every 30 s, then idle (after start-up and a warm-up request), peak under load, the highest in the
first and in the last minute of the load, after the load, and the growth over the second half (a least
squares slope of the samples, MB per minute): flat is a slope near 0 and a last minute no higher than the
first.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import WrkResult, free_port, image_python, post_script, rss_mb, run_wrk, stop, upstream_command
from upstream_overhead import BODIES, CATALOG, KEY, start_gateway, wait_ready

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def slope_mb_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least squares slope of (seconds, MB) samples, in MB per minute."""
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return 0.0
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the load (TARGETS: 10 min)")
    parser.add_argument("--venv", choices=("image", "dev"), default="image")
    parser.add_argument("--connections", type=int, default=32, help="total; a quarter of them stream")
    parser.add_argument("--tempo", choices=("up", "down"), default="up")
    args = parser.parse_args()
    if args.seconds < 120:
        parser.error("--seconds must be at least 120 (a first and a last minute)")

    workdir = Path(tempfile.mkdtemp(prefix="memory-soak-"))
    upstream_port, sink_port, gateway_port = free_port(), free_port(), free_port()
    (workdir / "catalog.toml").write_text(CATALOG.format(port=upstream_port))
    for mode, body in BODIES.items():
        (workdir / f"{mode}.lua").write_text(post_script(body, KEY))
    python = image_python("gateway", workdir / "venv-gateway") if args.venv == "image" else sys.executable
    upstream = subprocess.Popen(
        ["taskset", "-c", "1", *upstream_command(upstream_port, 20, 0)], stderr=subprocess.DEVNULL
    )
    sink = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, str(HERE / "otlp_sink.py"), str(sink_port)],
        stderr=subprocess.DEVNULL,  # its traceback at SIGINT, as the upstream's
    )
    gateway: subprocess.Popen[bytes] | None = None
    try:
        wait_ready(
            f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
            upstream,
            {"Content-Type": "application/json"},
        )
        otlp_port = sink_port if args.tempo == "up" else free_port()
        gateway = start_gateway(gateway_port, workdir, f"http://127.0.0.1:{otlp_port}", {}, python)
        url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        wait_ready(url, gateway, {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        time.sleep(2)
        idle = rss_mb(gateway.pid)
        streams = max(1, args.connections // 4)
        results: dict[str, WrkResult] = {}

        def load(mode: str, connections: int) -> None:
            results[mode] = run_wrk(url, args.seconds, connections, workdir / f"{mode}.lua")

        loads = [
            threading.Thread(target=load, args=("json", args.connections - streams)),
            threading.Thread(target=load, args=("stream", streams)),
        ]
        began = time.monotonic()
        for thread in loads:
            thread.start()
        samples: list[tuple[float, float]] = []
        while any(thread.is_alive() for thread in loads):
            elapsed = time.monotonic() - began
            samples.append((elapsed, rss_mb(gateway.pid)))
            if len(samples) % 30 == 1:
                print(f"{elapsed:6.0f} s  {samples[-1][1]:6.1f} MB", flush=True)
            time.sleep(1)
        for thread in loads:
            thread.join()
        time.sleep(5)
        after = rss_mb(gateway.pid)
    finally:
        for proc in (gateway, upstream, sink):
            if proc is not None:
                stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)

    load_seconds = samples[-1][0]
    first = max(v for t, v in samples if t <= 60)
    last = max(v for t, v in samples if t >= load_seconds - 60)
    second_half = [(t, v) for t, v in samples if t >= load_seconds / 2]
    served = {mode: f"{result.requests} ({result.rps:.0f}/s)" for mode, result in results.items()}
    print()
    print(
        f"gateway ({args.venv} virtualenv, Tempo {args.tempo}), {load_seconds:.0f} s of load,"
        f" requests served: {served}"
    )
    print(f"idle {idle:.1f} MB, peak {max(v for _, v in samples):.1f} MB, after {after:.1f} MB")
    print(f"first minute max {first:.1f} MB, last minute max {last:.1f} MB")
    print(f"second half slope {slope_mb_per_minute(second_half):+.2f} MB/min")


if __name__ == "__main__":
    main()
