"""The path users run: the gateway in front of an OpenAI-compatible upstream, against that upstream direct.

    uv run python bench/upstream_overhead.py [--rounds 5] [--seconds 5] [--chunks 20] [--chunk-interval-ms 1]
        [--before CHECKOUT] [--prompt-repeat N]

The upstream is `bench/openai_upstream.py` (raw asyncio on uvloop, its own process). Two variants, each
round, order alternating between rounds:
- direct: wrk against the upstream itself, the upstream pinned to CPU 0, wrk to CPU 1;
- gateway: `python -m gateway` (a fresh process each round) pinned to CPU 0, with an `openai`-kind catalog
  entry pointing at the upstream, which moves to CPU 1 beside wrk and the OTLP sink. Full telemetry:
  Bearer auth against SQLite, credit reservation and settlement, routing, inference metrics with
  exemplars, a server and a provider span exported over OTLP/HTTP (`bench/otlp_sink.py`), the access and
  inference lines on stdout (to /dev/null).
With `--before CHECKOUT` (e.g. a `git worktree` of an earlier commit, `uv sync`ed), that checkout's gateway
runs as a third variant in the same rounds, so a change is measured against its predecessor side by side.
Cells: non-streaming and streaming (`--chunks` SSE content chunks after a role chunk, then the finish and
usage chunks, `--chunk-interval-ms` apart as a model's tokens are, so each is read and relayed alone), each
at 1 and 32 connections (`wrk -t1 --latency`, after a 1 s warm-up). Figures per cell: throughput, p50 and
p99 (wrk's, closed loop), and CPU per request of the server under test (utime+stime / requests). Medians
(min-max) over rounds; "added" figures are gateway - direct within a round.
The prompt is one short user message (8 tokens); `--prompt-repeat N` sends `LONG_PROMPT_UNIT` N times
instead (N = 130: a 2,086-token prompt, the size at which counting the prompt for the reservation showed up).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from harness import WrkResult, cpu_seconds, free_port, post_script, run_wrk, stop, summary, upstream_command

HERE = Path(__file__).resolve().parent
KEY = "bench-not-a-secret-key"
SHORT_PROMPT = "How fast is the gateway today?"
LONG_PROMPT_UNIT = "The quick brown fox jumps over the lazy dog, and then: it naps. "
"""16 tokens by the gateway's count; `--prompt-repeat` sends it N times as the one user message."""


def bodies(prompt: str) -> dict[str, bytes]:
    """The non-streaming and streaming request bodies for one user message."""
    messages = f'"messages":[{{"role":"user","content":"{prompt}"}}]'
    return {
        "json": f'{{"model":"bench-upstream",{messages}}}'.encode(),
        "stream": f'{{"model":"bench-upstream","stream":true,{messages}}}'.encode(),
    }


BODIES = bodies(SHORT_PROMPT)
CATALOG = """
[[providers]]
name = "upstream"
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
timeout_seconds = 30

[[providers.models]]
id = "bench-upstream"
prompt_price = 0.000001
completion_price = 0.000002
max_output_tokens = 64
"""
CELLS = (("json", 1), ("json", 32), ("stream", 1), ("stream", 32))


def wait_ready(url: str, proc: subprocess.Popen[bytes], headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited {proc.returncode}")
        try:
            if httpx.post(url, content=BODIES["json"], headers=headers, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{url} not ready")


def gateway_env(port: int, workdir: Path, otlp_url: str, extra_env: dict[str, str]) -> dict[str, str]:
    """The gateway's environment: the bench catalog, a fresh SQLite file, full telemetry to `otlp_url`."""
    return {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "GATEWAY_PROVIDERS_FILE": str(workdir / "catalog.toml"),
        "GATEWAY_DB_PATH": str(workdir / f"gateway-{time.monotonic_ns()}.db"),
        "GATEWAY_BOOTSTRAP_API_KEY": KEY,
        "GATEWAY_DEMO_CREDITS": "1000000000",
        "TEMPO_ENABLED": "true",
        "TEMPO_OTLP_HTTP_ENDPOINT": otlp_url,
        "ENVIRONMENT": "bench",
        **extra_env,
    }


def start_gateway(
    port: int, workdir: Path, otlp_url: str, extra_env: dict[str, str], python: str = sys.executable
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["taskset", "-c", "0", python, "-m", "gateway"],
        env=gateway_env(port, workdir, otlp_url, extra_env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_ready(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        proc,
        {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    return proc


def measure_cells(
    url: str, pid: int, workdir: Path, seconds: float
) -> dict[tuple[str, int], dict[str, float]]:
    out = {}
    for mode, connections in CELLS:
        script = workdir / f"{mode}.lua"
        run_wrk(url, 1, connections, script)  # warm-up: pool, caches, JIT-free but allocator-warm
        before = cpu_seconds(pid)
        result: WrkResult = run_wrk(url, seconds, connections, script)
        cpu = cpu_seconds(pid) - before
        out[(mode, connections)] = {
            "rps": result.rps,
            "p50": result.p50,
            "p99": result.p99,
            "cpu_us": cpu / result.requests * 1e6,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-interval-ms", type=float, default=1.0)
    parser.add_argument(
        "--before",
        metavar="CHECKOUT",
        help="also run the gateway of another checkout (its .venv) in the same rounds, as variant 'before'",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        help="NAME=VALUE for the gateway (e.g. OTEL_EXPORTER_OTLP_PROTOCOL)",
    )
    parser.add_argument(
        "--prompt-repeat",
        type=int,
        default=0,
        metavar="N",
        help="send LONG_PROMPT_UNIT N times as the prompt, not the short one (130: 2,086 tokens)",
    )
    args = parser.parse_args()
    if args.prompt_repeat < 0:
        parser.error("--prompt-repeat must be 0 or more")
    extra_env = dict(item.split("=", 1) for item in args.env)

    workdir = Path(tempfile.mkdtemp(prefix="upstream-bench-"))
    upstream_port, sink_port, gateway_port = free_port(), free_port(), free_port()
    (workdir / "catalog.toml").write_text(CATALOG.format(port=upstream_port))
    prompt = LONG_PROMPT_UNIT * args.prompt_repeat if args.prompt_repeat else SHORT_PROMPT
    for mode, body in bodies(prompt).items():
        (workdir / f"{mode}.lua").write_text(post_script(body, KEY))
    upstream = subprocess.Popen(upstream_command(upstream_port, args.chunks, args.chunk_interval_ms))
    sink = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, str(HERE / "otlp_sink.py"), str(sink_port)]
    )
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
    gateway_url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
    variants = ("direct", "gateway", "before") if args.before else ("direct", "gateway")
    pythons = {
        "gateway": sys.executable,
        "before": str(Path(args.before or ".") / ".venv" / "bin" / "python"),
    }
    results: dict[str, list[dict[tuple[str, int], dict[str, float]]]] = {variant: [] for variant in variants}
    try:
        wait_ready(upstream_url, upstream, {"Content-Type": "application/json"})
        for round_no in range(args.rounds):
            order = variants if round_no % 2 == 0 else variants[::-1]
            for variant in order:
                if variant == "direct":
                    os.sched_setaffinity(upstream.pid, {0})
                    cells = measure_cells(upstream_url, upstream.pid, workdir, args.seconds)
                else:
                    os.sched_setaffinity(upstream.pid, {1})
                    gateway = start_gateway(
                        gateway_port, workdir, f"http://127.0.0.1:{sink_port}", extra_env, pythons[variant]
                    )
                    try:
                        cells = measure_cells(gateway_url, gateway.pid, workdir, args.seconds)
                    finally:
                        stop(gateway)
                results[variant].append(cells)
                for (mode, connections), cell in cells.items():
                    print(
                        f"round {round_no + 1} {variant:7} {mode:6} c={connections:<2}: "
                        f"{cell['rps']:7.0f} req/s  p50 {cell['p50']:7.3f} ms  p99 {cell['p99']:7.3f} ms  "
                        f"{cell['cpu_us']:7.1f} us CPU/req",
                        flush=True,
                    )
    finally:
        sink.kill()
        upstream.kill()

    print()
    print(f"{'':34}median (min-max) over {args.rounds} rounds")
    for mode, connections in CELLS:
        cell = (mode, connections)
        direct = [r[cell] for r in results["direct"]]
        gateway = [r[cell] for r in results["gateway"]]
        pairs = list(zip(direct, gateway, strict=True))
        tag = f"{mode} c={connections}"
        print(f"{tag + ' direct req/s':34}{summary([d['rps'] for d in direct], '{:.0f}')}")
        print(f"{tag + ' gateway req/s':34}{summary([g['rps'] for g in gateway], '{:.0f}')}")
        print(f"{tag + ' direct CPU us/req':34}{summary([d['cpu_us'] for d in direct], '{:.0f}')}")
        print(f"{tag + ' gateway CPU us/req':34}{summary([g['cpu_us'] for g in gateway], '{:.0f}')}")
        print(f"{tag + ' direct p50 ms':34}{summary([d['p50'] for d in direct])}")
        print(f"{tag + ' gateway p50 ms':34}{summary([g['p50'] for g in gateway])}")
        print(f"{tag + ' direct p99 ms':34}{summary([d['p99'] for d in direct])}")
        print(f"{tag + ' gateway p99 ms':34}{summary([g['p99'] for g in gateway])}")
        print(f"{tag + ' added p50 ms':34}{summary([g['p50'] - d['p50'] for d, g in pairs])}")
        if args.before:
            before = [r[cell] for r in results["before"]]
            print(f"{tag + ' before req/s':34}{summary([b['rps'] for b in before], '{:.0f}')}")
            print(f"{tag + ' before CPU us/req':34}{summary([b['cpu_us'] for b in before], '{:.0f}')}")
            print(f"{tag + ' before p50 ms':34}{summary([b['p50'] for b in before])}")
            ratio = [b["cpu_us"] / g["cpu_us"] for b, g in zip(before, gateway, strict=True)]
            print(f"{tag + ' before/now CPU':34}{summary(ratio, '{:.2f}')}")
    for connections in (1, 32):
        per_chunk = [
            (r[("stream", connections)]["cpu_us"] - r[("json", connections)]["cpu_us"]) / (args.chunks + 2)
            for r in results["gateway"]
        ]
        print(f"{f'stream c={connections} CPU us/chunk':34}{summary(per_chunk, '{:.1f}')}")
    flat = [r[("json", 32)]["cpu_us"] / r[("json", 1)]["cpu_us"] for r in results["gateway"]]
    print(f"{'json CPU c=32 / c=1':34}{summary(flat, '{:.2f}')}")


if __name__ == "__main__":
    main()
