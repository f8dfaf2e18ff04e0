"""Key limits: gateway CPU per request with a limited key against an unlimited one, in-process and on Redis.

    uv run python bench/key_limits.py [--rounds 3] [--seconds 5] [--connections 16]

One gateway (`python -m gateway`, full telemetry, spans to a local OTLP sink, logs to /dev/null, SQLite
store) per engine: the limits in process (`REDIS_URL` unset) or in Redis (Debian's redis-server, private,
on CPU 1). The gateway is pinned to CPU 0; wrk, Redis and the sink run on CPU 1. On each server, keys take
turns within every round (the order rotating round by round), so their ratios compare the same process:

- `unlimited`: demo user 1's key, no limits (what every request paid before keys had limits);
- `limited`: rpm and tpm set high enough never to refuse: the bucket decision (in process, or one Redis
  script call), the tokens estimate, the headers, and the give-back of unused tokens;
- `budgeted`: rpm, tpm and a budget: also the budget check in the reservation and the key's spend.

Per run: `wrk -t1 -c{connections}` POSTing one non-cacheable chat completion (local provider, 0 ms) for
`--seconds`; CPU per request = the server's utime+stime over the run / requests answered. Medians (min-max)
over rounds, and each limited key's added CPU against `unlimited` of the same round.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gateway_overhead as common
import httpx
from harness import cpu_seconds, post_script, run_wrk, stop, summary

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.redis_server import RedisServer  # noqa: E402

ADMIN = "bench-not-a-secret-admin-key"
ENGINES = ("in-process", "redis")
KEYS = ("unlimited", "limited", "budgeted")
HUGE = {"rpm": 1_000_000_000, "tpm": 1_000_000_000_000}


def start(port: int, workdir: Path, otlp_url: str, redis_url: str | None) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "GATEWAY_PROVIDERS_FILE": str(workdir / "catalog.toml"),
        "GATEWAY_DB_PATH": str(workdir / f"gateway-{port}-{time.monotonic_ns()}.db"),
        "GATEWAY_BOOTSTRAP_API_KEY": common.KEY,
        "GATEWAY_DEMO_CREDITS": "1000000000",
        "ADMIN_API_KEY": ADMIN,
        "TEMPO_ENABLED": "true",
        "TEMPO_OTLP_HTTP_ENDPOINT": otlp_url,
        "ENVIRONMENT": "bench",
    }
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    common.wait_ready(port, proc)
    return proc


def scripts(port: int, workdir: Path) -> dict[str, Path]:
    """One wrk script per key: the demo key, and two keys made through the key API."""
    keys = {"unlimited": common.KEY}
    for name, fields in (("limited", HUGE), ("budgeted", {**HUGE, "budget": 1_000_000_000})):
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/keys",
            json={"user_id": 1, "alias": f"bench-{name}-{time.monotonic_ns()}", **fields},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        response.raise_for_status()
        keys[name] = response.json()["key"]
    paths = {}
    for name, key in keys.items():
        path = workdir / f"{name}-{port}.lua"
        path.write_text(post_script(common.BODY, key))
        paths[name] = path
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="key-limits-bench-"))
    (workdir / "catalog.toml").write_text(common.CATALOG)
    redis = RedisServer().start()
    assert redis.process is not None
    os.sched_setaffinity(redis.process.pid, {1})
    sink_port = 14339
    sink = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, str(common.HERE / "otlp_sink.py"), str(sink_port)]
    )
    otlp_url = f"http://127.0.0.1:{sink_port}"
    print(f"load average before: {os.getloadavg()}", flush=True)
    cpu: dict[tuple[str, str], list[float]] = {(e, k): [] for e in ENGINES for k in KEYS}
    added: dict[tuple[str, str], list[float]] = {(e, k): [] for e in ENGINES for k in KEYS[1:]}
    servers: dict[str, tuple[subprocess.Popen[bytes], int, dict[str, Path]]] = {}
    try:
        for index, engine in enumerate(ENGINES):
            port = 18930 + index
            server = start(port, workdir, otlp_url, redis.url() if engine == "redis" else None)
            servers[engine] = (server, port, scripts(port, workdir))
        for _, port, paths in servers.values():
            for name in KEYS:  # warm-up: every key, every code path, on every server
                run_wrk(f"http://127.0.0.1:{port}/v1/chat/completions", 2, args.connections, paths[name])
        for round_no in range(args.rounds):
            order = KEYS[round_no % len(KEYS) :] + KEYS[: round_no % len(KEYS)]
            for engine in ENGINES if round_no % 2 == 0 else ENGINES[::-1]:
                server, port, paths = servers[engine]
                figures: dict[str, float] = {}
                for name in order:
                    before = cpu_seconds(server.pid)
                    result = run_wrk(
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        args.seconds,
                        args.connections,
                        paths[name],
                    )
                    figures[name] = (cpu_seconds(server.pid) - before) / result.requests * 1e6
                    cpu[engine, name].append(figures[name])
                    print(
                        f"round {round_no + 1} {engine:10} {name:9}: {result.rps:7.0f} req/s  "
                        f"{figures[name]:6.1f} us CPU/req",
                        flush=True,
                    )
                for name in KEYS[1:]:
                    added[engine, name].append(figures[name] - figures["unlimited"])
    finally:
        for server, _, _ in servers.values():
            stop(server)
        sink.kill()
        redis.destroy()
    print(f"load average after: {os.getloadavg()}")
    print(
        "\nmedian (min-max) over rounds; added = the key's CPU/req minus unlimited's, same server and round"
    )
    print(f"{'engine':10} {'key':9} {'CPU us/req':>24} {'added us/req':>24}")
    for engine in ENGINES:
        for name in KEYS:
            extra = summary(added[engine, name], "{:.1f}") if name != "unlimited" else "-"
            print(f"{engine:10} {name:9} {summary(cpu[engine, name], '{:.1f}'):>24} {extra:>24}")


if __name__ == "__main__":
    main()
