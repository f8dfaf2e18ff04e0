"""Scale-out: the gateway on PostgreSQL + Redis against SQLite + in-process, then 1 → 2 → 3 replicas.

    uv run python bench/scale_out.py [--rounds 3] [--seconds 6] [--rate 50] [--connections 16]

Part 1, per process. The same gateway (`python -m gateway`, full telemetry, spans to a local OTLP sink,
logs to /dev/null) with its user store in SQLite and its cache in process, or with `DATABASE_URL` (Debian's
PostgreSQL, private, durable: fsync on) and `REDIS_URL` (Debian's redis-server, private). The gateway is
pinned to CPU 0; PostgreSQL, Redis, the OTLP sink and the load generators share CPU 1. Per round, variants
alternating, each on a fresh server and database: peak throughput (`wrk -t1 -c16`, a non-cacheable chat
completion: auth, reservation, local provider, settlement) with the server's CPU per request, then p50/p99
at a fixed rate (open loop, latency from each request's scheduled time). Ratios are within a round.

Part 2, replicas. 1, 2 and 3 gateway processes on one PostgreSQL and one Redis, unpinned on the machine's
two cores with everything else; one `wrk -t1 -c8` per replica at once. Total throughput and the balance
check (balance + Σ usage = start) afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gateway_overhead as common

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.postgres import PostgresServer  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402

CREDITS = 1_000_000_000


def start(port: int, workdir: Path, otlp_url: str, env: dict[str, str], cpus: str | None) -> subprocess.Popen:
    environment = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "GATEWAY_PROVIDERS_FILE": str(workdir / "catalog.toml"),
        "GATEWAY_DB_PATH": str(workdir / f"gateway-{port}-{time.monotonic_ns()}.db"),
        "GATEWAY_BOOTSTRAP_API_KEY": common.KEY,
        "GATEWAY_DEMO_CREDITS": str(CREDITS),
        "TEMPO_ENABLED": "true",
        "TEMPO_OTLP_HTTP_ENDPOINT": otlp_url,
        "ENVIRONMENT": "bench",
        **env,
    }
    command = [sys.executable, "-m", "gateway"]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    proc = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    common.wait_ready(port, proc)
    return proc


def variant_env(variant: str, postgres: PostgresServer, redis: RedisServer) -> dict[str, str]:
    if variant == "sqlite":
        return {}
    redis.flush()
    return {"DATABASE_URL": postgres.create_database("bench"), "REDIS_URL": redis.url()}


def measure(variant: str, port: int, workdir: Path, otlp_url: str, args, postgres, redis) -> dict[str, float]:
    server = start(port, workdir, otlp_url, variant_env(variant, postgres, redis), cpus="0")
    try:
        common.run_wrk(port, 2, args.connections, workdir / "post.lua")  # warm-up
        before = common.cpu_seconds(server.pid)
        rps, total = common.run_wrk(port, args.seconds, args.connections, workdir / "post.lua")
        cpu = common.cpu_seconds(server.pid) - before
        latencies = common.run_fixed_rate(port, args.rate, args.seconds, 4)
        return {
            "p50": common.percentile(latencies, 0.50),
            "p99": common.percentile(latencies, 0.99),
            "rps": rps,
            "cpu_us": cpu / total * 1e6,
        }
    finally:
        common.stop(server)


def replicas(count: int, workdir: Path, otlp_url: str, args, postgres, redis) -> tuple[float, bool]:
    env = variant_env("postgresql", postgres, redis)
    ports = [18910 + index for index in range(count)]
    servers = [start(port, workdir, otlp_url, env, cpus=None) for port in ports]
    try:
        for port in ports:
            common.run_wrk(port, 1, 4, workdir / "post.lua")  # warm-up
        loads = [
            subprocess.Popen(
                [
                    "wrk",
                    "-t1",
                    "-c8",
                    f"-d{args.seconds}s",
                    "-s",
                    str(workdir / "post.lua"),
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for port in ports
        ]
        outputs = [load.communicate()[0] for load in loads]
    finally:
        for server in servers:
            common.stop(server)
    if any("Non-2xx" in out for out in outputs):
        raise RuntimeError(outputs)
    total = sum(float(out.split("Requests/sec:")[1].split()[0]) for out in outputs)
    database = env["DATABASE_URL"].rsplit("/", 1)[1]
    row = postgres.psql(
        "SELECT u.balance_micros + coalesce(sum(g.credits_micros), 0), "
        "(SELECT count(*) FROM gatewayz.holds) FROM gatewayz.users u "
        "LEFT JOIN gatewayz.usage g ON g.user_id = u.id WHERE u.id = 1 GROUP BY u.balance_micros",
        database=database,
    )
    books, holds = (int(value) for value in row.split("|"))
    return total, books == CREDITS * 1_000_000 and holds == 0


def summary(values: list[float], fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--skip-replicas", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    (workdir / "catalog.toml").write_text(common.CATALOG)
    (workdir / "post.lua").write_text(common.LUA)
    postgres = PostgresServer(durable=True).start()
    redis = RedisServer().start()
    for pid in (postgres.process.pid, redis.process.pid):
        os.sched_setaffinity(pid, {1})  # PostgreSQL's backends fork from the postmaster: they inherit it
    sink_port, port = 14329, 18909
    sink = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, str(common.HERE / "otlp_sink.py"), str(sink_port)]
    )
    otlp_url = f"http://127.0.0.1:{sink_port}"
    print(f"load average before: {os.getloadavg()}", flush=True)
    results: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgresql": []}
    scaling: dict[int, list[tuple[float, bool]]] = {1: [], 2: [], 3: []}
    try:
        for round_no in range(args.rounds):
            order = ("sqlite", "postgresql") if round_no % 2 == 0 else ("postgresql", "sqlite")
            for variant in order:
                result = measure(variant, port, workdir, otlp_url, args, postgres, redis)
                results[variant].append(result)
                print(
                    f"round {round_no + 1} {variant:10}: p50 {result['p50']:.3f} ms  "
                    f"p99 {result['p99']:.3f} ms at {args.rate:.0f} req/s | "
                    f"peak {result['rps']:7.0f} req/s  {result['cpu_us']:6.1f} us CPU/req",
                    flush=True,
                )
        if not args.skip_replicas:
            for round_no in range(args.rounds):
                for count in (1, 2, 3):
                    total, balanced = replicas(count, workdir, otlp_url, args, postgres, redis)
                    scaling[count].append((total, balanced))
                    print(
                        f"round {round_no + 1} {count} replica(s): {total:7.0f} req/s in total, "
                        f"books balance: {balanced}",
                        flush=True,
                    )
    finally:
        sink.kill()
        postgres.destroy()
        redis.destroy()
    print(f"load average after: {os.getloadavg()}")

    pairs = list(zip(results["sqlite"], results["postgresql"], strict=True))
    print(f"\n{'':32}median (min-max) over {args.rounds} rounds")
    for variant, rows in results.items():
        print(f"{variant + ' p50 ms':32}{summary([r['p50'] for r in rows])}")
        print(f"{variant + ' p99 ms':32}{summary([r['p99'] for r in rows])}")
        print(f"{variant + ' peak req/s':32}{summary([r['rps'] for r in rows], '{:.0f}')}")
        print(f"{variant + ' CPU us/req':32}{summary([r['cpu_us'] for r in rows], '{:.0f}')}")
    print(f"{'postgresql/sqlite throughput':32}{summary([p['rps'] / s['rps'] for s, p in pairs])}")
    added_cpu = [p["cpu_us"] - s["cpu_us"] for s, p in pairs]
    print(f"{'postgresql - sqlite CPU us/req':32}{summary(added_cpu, '{:.0f}')}")
    print(f"{'postgresql - sqlite p50 ms':32}{summary([p['p50'] - s['p50'] for s, p in pairs])}")
    if not args.skip_replicas:
        for count, runs in scaling.items():
            totals = [total for total, _ in runs]
            print(
                f"{f'{count} replica(s) req/s':32}{summary(totals, '{:.0f}')}  books balance: "
                f"{all(ok for _, ok in runs)}"
            )
        one = [total for total, _ in scaling[1]]
        for count in (2, 3):
            ratio = [total / base for (total, _), base in zip(scaling[count], one, strict=True)]
            print(f"{f'{count} replicas / 1':32}{summary(ratio, '{:.2f}')}")


if __name__ == "__main__":
    main()
