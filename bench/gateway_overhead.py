"""Gateway overhead: the full gateway vs the local provider called directly, provider latency 0 ms.

    uv run python bench/gateway_overhead.py [--rounds 3] [--seconds 10] [--rate N] [--connections 16]

Both servers run the same catalog (one local model, 0 ms, no errors) under uvicorn pinned to CPU 0; the load
generators and the OTLP sink run on CPU 1. The gateway runs with full telemetry: Bearer auth against SQLite,
credit reservation and settlement, routing, inference metrics, a server and a provider span exported over
OTLP/HTTP to a sink, the access line and the inference line on stdout (to /dev/null).

Per round, variants alternating, each on a fresh server:
- peak: `wrk -t1 -c{connections}`, a Lua script POSTing the same JSON: throughput, server CPU per request.
- fixed rate: an open-loop client sends `--rate` requests/s (default: a quarter of the gateway's peak,
  calibrated before the rounds, so well below saturation) over keep-alive connections for `--seconds`;
  latency counts from each request's *scheduled* time, so a stall is not hidden (no coordinated
  omission). Added p50/p99 = gateway - direct, within the round.
Then medians (min-max) over rounds and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from harness import cpu_seconds, stop, summary

HERE = Path(__file__).resolve().parent
KEY = "bench-not-a-secret-key"
BODY = b'{"model":"bench-zero","messages":[{"role":"user","content":"How fast is the gateway today?"}]}'
CATALOG = """
[[providers]]
name = "local"
kind = "local"

[[providers.models]]
id = "bench-zero"
prompt_price = 0.000001
completion_price = 0.000002
latency_ms = 0
max_output_tokens = 64
"""
LUA = f"""
wrk.method = "POST"
wrk.body = '{BODY.decode()}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {KEY}"
"""
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)


def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited {proc.returncode}")
        try:
            response = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                content=BODY,
                headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
                timeout=1,
            )
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server on {port} not ready")


def start(variant: str, port: int, workdir: Path, otlp_url: str) -> subprocess.Popen[bytes]:
    catalog = workdir / "catalog.toml"
    if variant == "direct":
        command = [sys.executable, str(HERE / "gateway_direct_server.py"), str(port), str(catalog)]
        env = dict(os.environ)
    else:
        command = [sys.executable, "-m", "gateway"]
        db = workdir / f"gateway-{port}-{time.monotonic_ns()}.db"
        env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "GATEWAY_PROVIDERS_FILE": str(catalog),
            "GATEWAY_DB_PATH": str(db),
            "GATEWAY_BOOTSTRAP_API_KEY": KEY,
            "GATEWAY_DEMO_CREDITS": "1000000000",
            "TEMPO_ENABLED": "true",
            "TEMPO_OTLP_HTTP_ENDPOINT": otlp_url,
            "ENVIRONMENT": "bench",
        }
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_ready(port, proc)
    return proc


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    await reader.readexactly(length)
    return status


async def fixed_rate(port: int, rate: float, seconds: float, connections: int) -> list[float]:
    """Open loop: request i is due at start + i/rate; latency counts from when it was due, in ms."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    errors = 0

    async def one(due: float) -> None:
        nonlocal errors
        conn = await pool.get()
        try:
            if await _exchange(*conn) != 200:
                errors += 1
            latencies.append((time.perf_counter() - due) * 1000)
        finally:
            pool.put_nowait(conn)

    start_at = time.perf_counter() + 0.05
    tasks = []
    for index in range(int(rate * seconds)):
        due = start_at + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        _, writer = pool.get_nowait()
        writer.close()
    if errors:
        raise RuntimeError(f"{errors} non-200 answers")
    return latencies


def run_fixed_rate(port: int, rate: float, seconds: float, connections: int) -> list[float]:
    # The load generator runs on the other core, like wrk.
    os.sched_setaffinity(0, {1})
    return asyncio.run(fixed_rate(port, rate, seconds, connections))


def run_wrk(port: int, seconds: int, connections: int, script: Path) -> tuple[float, int]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return rps, total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(
    variant: str, port: int, workdir: Path, otlp_url: str, args: argparse.Namespace
) -> dict[str, float]:
    server = start(variant, port, workdir, otlp_url)
    try:
        run_wrk(port, 2, args.connections, workdir / "post.lua")  # warm-up
        before = cpu_seconds(server.pid)
        rps, total = run_wrk(port, args.seconds, args.connections, workdir / "post.lua")
        cpu = cpu_seconds(server.pid) - before
        latencies = run_fixed_rate(port, args.rate, args.seconds, 4)
        return {
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
            "rps": rps,
            "cpu_us": cpu / total * 1e6,
        }
    finally:
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="requests/s; 0 = a quarter of the gateway's peak"
    )
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    (workdir / "catalog.toml").write_text(CATALOG)
    (workdir / "post.lua").write_text(LUA)
    sink_port, port = 14319, 18901
    sink = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, str(HERE / "otlp_sink.py"), str(sink_port)]
    )
    otlp_url = f"http://127.0.0.1:{sink_port}"
    results: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
    try:
        if not args.rate:
            server = start("gateway", port, workdir, otlp_url)
            try:
                run_wrk(port, 2, args.connections, workdir / "post.lua")
                peak, _ = run_wrk(port, 3, args.connections, workdir / "post.lua")
            finally:
                stop(server)
            args.rate = max(10.0, round(peak / 4, -1))
            print(f"calibrated: gateway peak {peak:.0f} req/s, fixed rate {args.rate:.0f} req/s", flush=True)
        for round_no in range(args.rounds):
            order = ("direct", "gateway") if round_no % 2 == 0 else ("gateway", "direct")
            for variant in order:
                result = measure(variant, port, workdir, otlp_url, args)
                results[variant].append(result)
                print(
                    f"round {round_no + 1} {variant:7}: p50 {result['p50']:.3f} ms  "
                    f"p99 {result['p99']:.3f} ms at {args.rate:.0f} req/s | "
                    f"peak {result['rps']:7.0f} req/s  {result['cpu_us']:6.1f} us CPU/req",
                    flush=True,
                )
    finally:
        sink.kill()

    pairs = list(zip(results["direct"], results["gateway"], strict=True))
    print()
    print(f"{'':28}median (min-max) over {args.rounds} rounds")
    for variant in ("direct", "gateway"):
        rows = results[variant]
        print(f"{variant + ' p50 ms':28}{summary([r['p50'] for r in rows])}")
        print(f"{variant + ' p99 ms':28}{summary([r['p99'] for r in rows])}")
        print(f"{variant + ' peak req/s':28}{summary([r['rps'] for r in rows], '{:.0f}')}")
        print(f"{variant + ' CPU us/req':28}{summary([r['cpu_us'] for r in rows], '{:.0f}')}")
    print(f"{'added p50 ms':28}{summary([g['p50'] - d['p50'] for d, g in pairs])}")
    print(f"{'added p99 ms':28}{summary([g['p99'] - d['p99'] for d, g in pairs])}")
    print(f"{'added CPU us/req':28}{summary([g['cpu_us'] - d['cpu_us'] for d, g in pairs], '{:.0f}')}")
    print(f"{'gateway/direct throughput':28}{summary([g['rps'] / d['rps'] for d, g in pairs])}")


if __name__ == "__main__":
    main()
