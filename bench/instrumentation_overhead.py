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
from pathlib import Path

import httpx
from instrumented_server import VARIANTS

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


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


def measure(variant: str, port: int, otlp_url: str, seconds: int, connections: int) -> dict[str, float]:
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
        return {
            "rps": rps,
            "cpu_us_per_req": cpu / total * 1e6,
            "p50_ms": p50,
            "server_core": cpu / seconds,
            "wrk_core": load_cpu / seconds,
            "rss_mb": rss_mb(server.pid),
        }
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):10.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
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
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in variants}
    try:
        for round_no in range(args.rounds):
            order = variants if round_no % 2 == 0 else variants[::-1]
            for variant in order:
                result = measure(variant, server_port, otlp_url, args.seconds, args.connections)
                results[variant].append(result)
                print(
                    f"round {round_no + 1} {variant:10}: {result['rps']:8.0f} req/s  "
                    f"{result['cpu_us_per_req']:6.1f} us CPU/req  p50 {result['p50_ms']:.2f} ms  "
                    f"server core {result['server_core']:.2f}  wrk core {result['wrk_core']:.2f}  "
                    f"RSS {result['rss_mb']:.0f} MB",
                    flush=True,
                )
    finally:
        sink.kill()

    print()
    print(f"{'':24}{'median (min-max)':>28}")
    for variant in variants:
        print(f"{variant + ' req/s':24}{summary([r['rps'] for r in results[variant]]):>28}")
        print(f"{variant + ' CPU us/req':24}{summary([r['cpu_us_per_req'] for r in results[variant]]):>28}")
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
