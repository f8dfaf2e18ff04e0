"""Key limits under callgrind: instructions per request with each kind of key, and against an older tree.

    uv run python bench/key_limits_instructions.py [--requests 200] [--base-src DIR] [--variants a,b,...]

`python -m gateway` (local provider, 0 ms, full telemetry, spans to `bench/otlp_sink.py`, SQLite) runs under
`valgrind --tool=callgrind`; the keys are made through the key API first, then N and, in a second run, 2N
keep-alive chat completions go over one connection with one key: the difference of the two totals ÷ N is one
request (start-up, the key API calls and shutdown cancel out). User-space instructions only, so the figures
do not move with the machine's load (`bench/key_limits.py` gives CPU time per request in the same setup).

Variants: `unlimited`, `limited` (rpm and tpm that never refuse), `budgeted` (rpm, tpm and a budget), each
in process or on Redis (`redis-limited`, ...; Debian's redis-server, private, running natively). `base`:
the unlimited key on the source tree given by `--base-src` (e.g. `git archive <commit> | tar -x -C DIR`),
the gateway's code before keys had limits, to show what an unlimited key pays for them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gateway_overhead as common
from harness import callgrind_instructions, first_connection

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.processes import free_port  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402

HERE = Path(__file__).resolve().parent
SINK_PORT, GATEWAY_PORT = free_port(), free_port()
ADMIN = "bench-not-a-secret-admin-key"
LIMITS = {"limited": {"rpm": 1_000_000_000, "tpm": 1_000_000_000_000}}
LIMITS["budgeted"] = {**LIMITS["limited"], "budget": 1_000_000_000}


def exchange(connection: http.client.HTTPConnection, key: str) -> None:
    connection.request(
        "POST",
        "/v1/chat/completions",
        body=common.BODY,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"gateway answered {response.status}")


def make_key(connection: http.client.HTTPConnection, fields: dict[str, object]) -> str:
    body = json.dumps({"user_id": 1, "alias": f"bench-{time.monotonic_ns()}", **fields})
    connection.request(
        "POST",
        "/api/keys",
        body=body,
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    text = response.read()
    if response.status != 201:
        raise RuntimeError(f"key API answered {response.status}: {text[:200]!r}")
    return str(json.loads(text)["key"])


def total(variant: str, requests: int, workdir: Path, redis_url: str, base_src: str | None) -> int:
    kind = variant.removeprefix("redis-")

    def drive(gateway: subprocess.Popen[bytes]) -> None:
        connection = first_connection(GATEWAY_PORT, lambda conn: exchange(conn, common.KEY), gateway)
        key = make_key(connection, LIMITS[kind]) if kind in LIMITS else common.KEY
        exchange(connection, key)
        for _ in range(requests):
            exchange(connection, key)
        connection.close()

    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(GATEWAY_PORT),
        "GATEWAY_PROVIDERS_FILE": str(workdir / "catalog.toml"),
        "GATEWAY_DB_PATH": str(workdir / f"gateway-{time.monotonic_ns()}.db"),
        "GATEWAY_BOOTSTRAP_API_KEY": common.KEY,
        "GATEWAY_DEMO_CREDITS": "1000000000",
        "ADMIN_API_KEY": ADMIN,
        "TEMPO_ENABLED": "true",
        "TEMPO_OTLP_HTTP_ENDPOINT": f"http://127.0.0.1:{SINK_PORT}",
        "ENVIRONMENT": "bench",
        "PYTHONHASHSEED": "0",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
    }
    if variant.startswith("redis-"):
        env["REDIS_URL"] = redis_url
    if variant == "base":
        if base_src is None:
            raise SystemExit("the base variant needs --base-src")
        source = Path(base_src)
        env["PYTHONPATH"] = os.pathsep.join(
            str(source / part) for part in ("services/gateway/src", "shared/src")
        )
    return callgrind_instructions([sys.executable, "-m", "gateway"], env, workdir / "callgrind.log", drive)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--base-src", default=None)
    parser.add_argument("--variants", default="unlimited,limited,budgeted,redis-limited,redis-budgeted")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="key-limits-instructions-"))
    (workdir / "catalog.toml").write_text(common.CATALOG)
    redis = RedisServer().start()
    sink = subprocess.Popen([sys.executable, str(HERE / "otlp_sink.py"), str(SINK_PORT)])
    try:
        for variant in args.variants.split(","):
            small = total(variant, args.requests, workdir, redis.url(), args.base_src)
            large = total(variant, 2 * args.requests, workdir, redis.url(), args.base_src)
            print(
                f"{variant:15} {(large - small) / args.requests / 1000:8.1f} k instructions per request",
                flush=True,
            )
    finally:
        sink.kill()
        redis.destroy()


if __name__ == "__main__":
    main()
