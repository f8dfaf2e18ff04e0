"""Instrumentation overhead: the same no-op route bare vs with full telemetry, side by side in one run.

    uv run python bench/instrumentation_overhead.py [--rounds 5] [--seconds 10] [--connections 16]
        [--variants bare,full[,unexported,metrics]]

The server is pinned to CPU 0, wrk and the OTLP sink to CPU 1. Variants alternate within each round; the
script prints per-round figures, then medians (min-max) of throughput, CPU per request and their ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
from harness import rss_mb
from instrumented_server import VARIANTS

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start_server(variant: str, port: int, otlp_url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            str(HERE / "instrumented_server.py"),
            variant,
            str(port),
            otlp_url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/noop", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{variant} server did not start")


def run_wrk(port: int, seconds: int, connections: int) -> tuple[float, int, float]:
    """Requests/s, total requests and p50 latency in ms, from wrk's report."""
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            f"http://127.0.0.1:{port}/noop",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    return rps, total, float(p50.group(1)) * scale


def measure(
    variant: str,
    port: int,
    otlp_url: str,
    seconds: int,
    connections: int,
    inspect: Callable[[int], dict[str, float]] | None = None,
) -> dict[str, float]:
    """One run on a fresh server: warm-up, then wrk; `inspect(port)` adds figures read before it stops."""
    server = start_server(variant, port, otlp_url)
    try:
        run_wrk(port, 2, connections)  # warm-up
        before = cpu_seconds(server.pid)
        rusage_before = os.times()
        rps, total, p50 = run_wrk(port, seconds, connections)
        rusage_after = os.times()
        cpu = cpu_seconds(server.pid) - before
        load_cpu = (rusage_after.children_user + rusage_after.children_system) - (
            rusage_before.children_user + rusage_before.children_system
        )
        result = {
            "rps": rps,
            "cpu_us_per_req": cpu / total * 1e6,
            "p50_ms": p50,
            "requests": total,
            "server_core": cpu / seconds,
            "wrk_core": load_cpu / seconds,
            "rss_mb": rss_mb(server.pid),
        }
        if inspect is not None:
            result |= inspect(port)
        return result
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):10.1f} ({min(values):.1f}-{max(values):.1f})"


def alternate(
    variants: Sequence[str],
    rounds: int,
    measure_one: Callable[[str], dict[str, float]],
    extra: Callable[[dict[str, float]], str] = lambda _result: "",
) -> dict[str, list[dict[str, float]]]:
    """Every variant once per round, the order reversed every other round; one line per run as it ends
    (throughput, CPU per request, p50, then what `extra` says of the result)."""
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in variants}
    for round_no in range(rounds):
        order = list(variants) if round_no % 2 == 0 else list(variants)[::-1]
        for variant in order:
            result = measure_one(variant)
            results[variant].append(result)
            print(
                f"round {round_no + 1} {variant:10}: {result['rps']:8.0f} req/s  "
                f"{result['cpu_us_per_req']:6.1f} us CPU/req  p50 {result['p50_ms']:.2f} ms  {extra(result)}",
                flush=True,
            )
    return results


def print_medians(results: dict[str, list[dict[str, float]]], width: int = 24) -> None:
    """Median (min-max) throughput and CPU per request of each variant."""
    print()
    print(f"{'':{width}}{'median (min-max)':>28}")
    for variant, runs in results.items():
        print(f"{variant + ' req/s':{width}}{summary([r['rps'] for r in runs]):>28}")
        print(f"{variant + ' CPU us/req':{width}}{summary([r['cpu_us_per_req'] for r in runs]):>28}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--variants", default="bare,full", help="bare first; others: " + ",".join(VARIANTS))
    args = parser.parse_args()
    variants = args.variants.split(",")
    if variants[0] != "bare" or not set(variants) <= set(VARIANTS):
        parser.error(f"--variants: bare first, then any of {', '.join(VARIANTS)}")

    sink_port, server_port = 14318, 18900
    sink = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, str(HERE / "otlp_sink.py"), str(sink_port)]
    )
    otlp_url = f"http://127.0.0.1:{sink_port}"
    try:
        results = alternate(
            variants,
            args.rounds,
            lambda variant: measure(variant, server_port, otlp_url, args.seconds, args.connections),
            lambda result: (
                f"server core {result['server_core']:.2f}  wrk core {result['wrk_core']:.2f}  "
                f"RSS {result['rss_mb']:.0f} MB"
            ),
        )
    finally:
        sink.kill()

    print_medians(results)
    bare = results["bare"]
    for variant in variants[1:]:
        pairs = list(zip(bare, results[variant], strict=True))
        ratios = [v["rps"] / b["rps"] for b, v in pairs]
        added = [v["cpu_us_per_req"] - b["cpu_us_per_req"] for b, v in pairs]
        print(
            f"{variant + '/bare throughput':24}"
            f"{statistics.median(ratios):10.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
        )
        print(f"{variant + ' added CPU us/req':24}{summary(added):>28}")
    print(f"{'wrk core use (max)':24}{max(r['wrk_core'] for v in results.values() for r in v):10.2f}")


if __name__ == "__main__":
    main()
