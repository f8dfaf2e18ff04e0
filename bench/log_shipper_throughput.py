"""Log-shipper throughput: lines per CPU-second end to end (file → strict fake Loki) and peak RSS.

Compares, in the same rounds and in rotating order, `python -m log_shipper` (spool and positions on,
fsync'd) pushing snappy protobuf (the default) and gzip JSON (`LOKI_PUSH_ENCODING=json`) with the 60-line
no-durability anchor in `bench/log_shipper_anchor.py`. The process under test is pinned to CPU 1; this
driver and the fake Loki run on CPU 0. CPU = the process's utime+stime from the moment the file appears
until Loki holds every line; start-up CPU (interpreter, imports, app, until `/health` answers and the
process is idle) is reported beside it. Bytecode is compiled first, as the images do (UV_COMPILE_BYTECODE).

    uv run python bench/log_shipper_throughput.py --lines 1000000 --rounds 5
"""

from __future__ import annotations

import argparse
import compileall
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import log_shipper
import telemetry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import image_python
from instrumentation_overhead import cpu_seconds  # the same /proc reading as the other benches

from support.fake_loki import FakeLoki
from support.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = ["/v1/chat/completions", "/api/users/{user_id}", "/v1/models", "/health"]


def write_lines(path: Path, count: int) -> int:
    """Gateway-shaped access lines (SPEC §4), timestamps from 60 s ago onwards; the bytes written."""
    rng = random.Random(7)
    start = time.time() - 60
    with path.open("w") as file:
        for i in range(count):
            moment = start + i * 0.0001
            stamp = (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment * 1000) % 1000:03d}Z"
            )
            roll = rng.random()
            level, status = (
                ("ERROR", 502) if roll < 0.02 else ("WARNING", 404) if roll < 0.1 else ("INFO", 200)
            )
            file.write(
                f'{{"timestamp":"{stamp}","level":"{level}","service":"gatewayz-api",'
                f'"endpoint":"{ENDPOINTS[i % 4]}","method":"POST","status_code":{status},'
                f'"duration_ms":{rng.randint(1, 900)},"trace_id":"{rng.getrandbits(128):032x}",'
                f'"span_id":"{rng.getrandbits(64):016x}","seq":{i},"message":"Request completed"}}\n'
            )
    return path.stat().st_size


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pin(cpu: int):
    def apply() -> None:
        if cpu < os.cpu_count():
            os.sched_setaffinity(0, {cpu})

    return apply


VARIANTS = ("anchor", "shipper", "shipper-json")
"""anchor: no durability; shipper: protobuf push (default); shipper-json: LOKI_PUSH_ENCODING=json."""


def compile_bytecode() -> None:
    """Compile what the shipper imports, so start-up is measured as deployed (not compiling sources)."""
    paths = {Path(sys.prefix) / "lib", Path(log_shipper.__file__).parent, Path(telemetry.__file__).parent}
    for path in paths:
        compileall.compile_dir(path, quiet=2, workers=2)


def run_once(
    variant: str, data: Path, count: int, loki: FakeLoki, workdir: Path, python: str
) -> dict[str, float]:
    target = workdir / "app.log"
    env = {**os.environ, "ENVIRONMENT": "bench"}
    if variant.startswith("shipper"):
        port = free_port()
        env.update(
            PORT=str(port),
            HOST="127.0.0.1",
            TEMPO_ENABLED="false",
            LOKI_PUSH_URL=loki.push_url,
            SHIPPER_FILES=str(target),
            SHIPPER_SPOOL_DIR=str(workdir / "spool"),
            ACCESS_LOG="false",
            LOKI_PUSH_ENCODING="json" if variant == "shipper-json" else "protobuf",
        )
        command = [python, "-m", "log_shipper"]
    else:
        command = [sys.executable, str(ROOT / "bench" / "log_shipper_anchor.py"), str(target), loki.push_url]
    process = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pin(1),  # noqa: PLW1509 - the driver's threads hold no locks the child needs
    )
    try:
        if variant.startswith("shipper"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
        time.sleep(1.0)
        before = cpu_seconds(process.pid)
        start_pushes = len(loki.pushes)
        start_accepted = loki.accepted
        started = time.perf_counter()
        os.link(data, target)
        deadline = time.monotonic() + 120
        while loki.accepted - start_accepted < count:
            if time.monotonic() > deadline or (process.poll() is not None and variant != "anchor"):
                raise RuntimeError(
                    f"{variant}: only {loki.accepted - start_accepted} of {count} lines arrived"
                )
            time.sleep(0.005)
        wall = time.perf_counter() - started
        cpu = cpu_seconds(process.pid) - before
        # Bytes on the wire per line (compressed bodies), from the Content-Length Loki received.
        sent = sum(int(push.headers.get("content-length", 0)) for push in loki.pushes[start_pushes:])
        return {
            "cpu": cpu,
            "startup": before,
            "wall": wall,
            "rss": peak_rss_mb(process.pid),
            "lines_per_cpu_s": count / cpu,
            "wire_bytes_per_line": sent / count,
        }
    finally:
        if process.stdin is not None:
            process.stdin.close()
        if process.poll() is None:
            process.terminate()
            process.wait(15)
        target.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--venv",
        choices=("dev", "image"),
        default="dev",
        help="run the shipper from this virtualenv (dev) or from one built as its image builds it",
    )
    args = parser.parse_args()
    variants = [name for name in args.variants.split(",") if name]
    pin(0)()
    compile_bytecode()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="shipper-bench-") as tmp, FakeLoki(keep=False) as loki:
        data = Path(tmp) / "data.ndjson"
        size = write_lines(data, args.lines)
        python = image_python("log-shipper", Path(tmp) / "venv") if args.venv == "image" else sys.executable
        print(f"{args.lines} lines, {size / args.lines:.0f} bytes a line; CPU {os.cpu_count()} cores")
        for round_ in range(args.rounds):
            shift = round_ % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                workdir = Path(tmp) / f"{variant}-{round_}"
                workdir.mkdir()
                result = run_once(variant, data, args.lines, loki, workdir, python)
                results[variant].append(result)
                print(
                    f"round {round_ + 1} {variant:12s} {result['lines_per_cpu_s']:>10,.0f} lines/CPU-s"
                    f"  cpu {result['cpu']:.2f} s  start-up cpu {result['startup']:.2f} s"
                    f"  wall {result['wall']:.2f} s  peak RSS {result['rss']:.0f} MB"
                    f"  wire {result['wire_bytes_per_line']:.1f} B/line"
                )
        print("non-2xx pushes during the runs:", sum(1 for s in loki.statuses() if s != 204))
    print("\nvariant       lines/CPU-s median (min-max)   start-up CPU s   peak RSS MB   wire B/line")
    for variant, runs in results.items():
        rates = [run["lines_per_cpu_s"] for run in runs]
        spread = f"({min(rates):,.0f}-{max(rates):,.0f})"
        print(
            f"{variant:12s}  {statistics.median(rates):>10,.0f} {spread:22s}"
            f"  {statistics.median(run['startup'] for run in runs):>6.2f}"
            f"  {statistics.median(run['rss'] for run in runs):>12.0f}"
            f"  {statistics.median(run['wire_bytes_per_line'] for run in runs):>12.1f}"
        )
    if "anchor" in results:
        for variant in variants:
            if variant == "anchor":
                continue
            # Ratios within each round, then their median (the fair comparison on a shared machine).
            ratios = [
                ours["lines_per_cpu_s"] / anchor["lines_per_cpu_s"]
                for ours, anchor in zip(results[variant], results["anchor"], strict=True)
            ]
            print(
                f"{variant} / anchor, per round: median {statistics.median(ratios):.2f}"
                f" ({min(ratios):.2f}-{max(ratios):.2f})"
            )


if __name__ == "__main__":
    main()
