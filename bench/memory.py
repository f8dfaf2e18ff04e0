"""RSS of each service idle and under load (traffic through the gateway, scrapes of every /metrics).

    uv run python bench/memory.py [--rounds 5] [--requests 3000] [--concurrency 16]

Each round starts a fresh gateway, admin and log-shipper (shipper reading the gateway's and admin's stdout
from a pipe), measures idle RSS after warm-up, drives `gatewayz_tools.traffic`, samples RSS every 100 ms
during the load, and notes idle / peak-under-load / after-load RSS per service. Prints each round, then the
median (min-max) over rounds, in MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from harness import rss_mb, wait_healthy  # noqa: E402

from support.processes import free_port  # noqa: E402

SERVICES = ("gateway", "admin", "log-shipper")
Figures = dict[str, tuple[float, float, float]]
"""Per service: idle, peak under load, after load (MB)."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    rounds: list[Figures] = []
    for round_no in range(1, args.rounds + 1):
        figures = measure_round(args.requests, args.concurrency)
        rounds.append(figures)
        for name in SERVICES:
            idle, peak, after = figures[name]
            print(
                f"round {round_no} {name:12} idle {idle:6.1f}  peak {peak:6.1f}  after {after:6.1f}",
                flush=True,
            )
    print()
    print(
        f"{'service':12} {'idle MB':>20} {'peak MB':>20} {'after MB':>20}   median (min-max) of {args.rounds}"
    )
    for name in SERVICES:
        cells = []
        for column in range(3):
            values = [figures[name][column] for figures in rounds]
            cells.append(f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})")
        print(f"{name:12} {cells[0]:>20} {cells[1]:>20} {cells[2]:>20}")


def measure_round(requests: int, concurrency: int) -> Figures:
    """Start the three services, load them, and return their RSS figures."""
    work = Path(tempfile.mkdtemp(prefix="gatewayz-memory-"))
    key = "bench-key-" + os.urandom(8).hex()
    ports = {name: free_port() for name in ("gateway", "admin", "log-shipper")}
    base = {**os.environ, "HOST": "127.0.0.1", "TEMPO_ENABLED": "false"}
    shipper = subprocess.Popen(
        [sys.executable, "-m", "log_shipper"],
        env={
            **base,
            "PORT": str(ports["log-shipper"]),
            "SHIPPER_STDIN": "true",
            "LOKI_ENABLED": "false",
            "SHIPPER_SPOOL_DIR": str(work / "spool"),
        },
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        env={
            **base,
            "PORT": str(ports["gateway"]),
            "GATEWAY_BOOTSTRAP_API_KEY": key,
            "GATEWAY_DB_PATH": str(work / "gateway.db"),
        },
        stdout=shipper.stdin,
        stderr=subprocess.DEVNULL,
    )
    admin = subprocess.Popen(
        [sys.executable, "-m", "admin"],
        env={
            **base,
            "PORT": str(ports["admin"]),
            "GATEWAY_URL": f"http://127.0.0.1:{ports['gateway']}",
            "ADMIN_API_KEY": "bench-admin-" + os.urandom(8).hex(),
        },
        stdout=shipper.stdin,
        stderr=subprocess.DEVNULL,
    )
    processes = {"gateway": gateway, "admin": admin, "log-shipper": shipper}
    try:
        for port in ports.values():
            wait_healthy(f"http://127.0.0.1:{port}/health")
        time.sleep(2)
        idle = {name: rss_mb(proc.pid) for name, proc in processes.items()}
        peak = dict(idle)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for name, proc in processes.items():
                    peak[name] = max(peak[name], rss_mb(proc.pid))
                for port in ports.values():
                    httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "gatewayz_tools.traffic",
                "--gateway",
                f"http://127.0.0.1:{ports['gateway']}",
                "--api-key",
                key,
                "--requests",
                str(requests),
                "--concurrency",
                str(concurrency),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stop.set()
        sampler.join()
        after = {name: rss_mb(proc.pid) for name, proc in processes.items()}
        return {name: (idle[name], peak[name], after[name]) for name in processes}
    finally:
        for proc in (gateway, admin):
            proc.terminate()
            proc.wait(10)
        if shipper.stdin:
            shipper.stdin.close()
        shipper.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
