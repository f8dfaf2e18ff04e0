"""Instructions per request of the gateway in front of an OpenAI-compatible upstream, under callgrind.

    uv run python bench/upstream_instructions.py [--requests 500] [--mode json|stream] [--env NAME=VALUE ...]

`python -m gateway` runs as deployed (the `openai`-kind catalog of `bench/upstream_overhead.py`, full
telemetry, spans to `bench/otlp_sink.py`) under `valgrind --tool=callgrind`, in front of
`bench/openai_upstream.py` running natively; N then 2N keep-alive requests go over one connection, and the
difference of the two totals ÷ N is one request (start-up and shutdown cancel out). User-space instructions
only, so the figure does not move with the machine's load: the one to compare commits and ablations by
(`--env TEMPO_ENABLED=false`, `--env ACCESS_LOG=false`, …). Spans leave only in full batches
(`OTEL_BSP_SCHEDULE_DELAY` set high), so the counts do not depend on timing.
"""

from __future__ import annotations

import argparse
import http.client
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import callgrind_instructions, first_connection, free_port, upstream_command
from upstream_overhead import BODIES, CATALOG, KEY, gateway_env

HERE = Path(__file__).resolve().parent
UPSTREAM_PORT, SINK_PORT, GATEWAY_PORT = free_port(), free_port(), free_port()
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def exchange(connection: http.client.HTTPConnection, body: bytes) -> None:
    connection.request("POST", "/v1/chat/completions", body=body, headers=HEADERS)
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"gateway answered {response.status}")


def total_instructions(
    workdir: Path, body: bytes, requests: int, extra_env: dict[str, str], out_file: str = "/dev/null"
) -> int:
    def drive(gateway: subprocess.Popen[bytes]) -> None:
        connection = first_connection(GATEWAY_PORT, lambda conn: exchange(conn, body), gateway)
        for _ in range(requests):
            exchange(connection, body)
        connection.close()

    env = gateway_env(GATEWAY_PORT, workdir, f"http://127.0.0.1:{SINK_PORT}", extra_env)
    env.update(PYTHONHASHSEED="0", OTEL_BSP_SCHEDULE_DELAY="60000")
    return callgrind_instructions(
        [sys.executable, "-m", "gateway"], env, workdir / "callgrind.log", drive, out_file
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--mode", choices=sorted(BODIES), default="json")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument(
        "--chunk-interval-ms",
        type=float,
        default=5.0,
        help="wide enough that callgrind reads each chunk apart",
    )
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the gateway")
    parser.add_argument(
        "--profile", metavar="FILE", help="one run of --requests, its callgrind profile kept in FILE"
    )
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    workdir = Path(tempfile.mkdtemp(prefix="upstream-instructions-"))
    (workdir / "catalog.toml").write_text(CATALOG.format(port=UPSTREAM_PORT))
    upstream = subprocess.Popen(upstream_command(UPSTREAM_PORT, args.chunks, args.chunk_interval_ms))
    sink = subprocess.Popen([sys.executable, str(HERE / "otlp_sink.py"), str(SINK_PORT)])
    try:
        body = BODIES[args.mode]
        if args.profile:
            total = total_instructions(
                workdir, body, args.requests, extra_env, str(Path(args.profile).resolve())
            )
            print(
                f"{args.profile}: {total / 1e6:.1f} M instructions in all; callgrind_annotate {args.profile}"
            )
            return
        small = total_instructions(workdir, body, args.requests, extra_env)
        large = total_instructions(workdir, body, 2 * args.requests, extra_env)
        per_request = (large - small) / args.requests
        label = " ".join(args.env) or "full telemetry"
        print(f"{args.mode} ({label}): {per_request / 1000:.1f} k instructions per request", flush=True)
    finally:
        sink.kill()
        upstream.kill()


if __name__ == "__main__":
    main()
