"""Instructions per *served* request: uvicorn, httptools and the app under callgrind, over loopback.

    uv run python bench/served_instructions.py [--requests 1000] [--variants bare,unexported,full]
    uv run python bench/served_instructions.py --variants bare,full,forwarding,forwarding-gzip  # forwarding

`bench/instructions.py` drives the ASGI app in-process; this runs `bench/instrumented_server.py` as
deployed, under `valgrind --tool=callgrind`, and sends N then 2N keep-alive requests over one connection
(the difference of the two totals ÷ N is one request, start-up and shutdown cancelled out). It counts the
server's user-space instructions, so it confirms the wall-clock ratio without the machine's noise; kernel
time (sockets, `write(2)`) is not in it. Spans leave only in full batches (`OTEL_BSP_SCHEDULE_DELAY` set
high), and so do forwarded log lines (`LOG_FORWARD_FLUSH_SECONDS` high): the counts do not depend on timing.
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import callgrind_instructions, first_connection

HERE = Path(__file__).resolve().parent
SERVER_PORT, SINK_PORT = 18950, 14321


def noop(connection: http.client.HTTPConnection) -> None:
    connection.request("GET", "/noop")
    connection.getresponse().read()


def total_instructions(variant: str, requests: int, log: Path) -> int:
    """Instructions of one server run that serves `requests` requests (plus one to see it is up)."""

    def drive(server: subprocess.Popen[bytes]) -> None:
        connection = first_connection(SERVER_PORT, noop, server)
        for _ in range(requests):
            noop(connection)
        connection.close()

    return callgrind_instructions(
        [
            sys.executable,
            str(HERE / "instrumented_server.py"),
            variant,
            str(SERVER_PORT),
            f"http://127.0.0.1:{SINK_PORT}",
        ],
        {
            **os.environ,
            "PYTHONHASHSEED": "0",
            "OTEL_BSP_SCHEDULE_DELAY": "60000",
            "LOG_FORWARD_URL": f"http://127.0.0.1:{SINK_PORT}/ingest",  # the forwarding variants' receiver
            "LOG_FORWARD_FLUSH_SECONDS": "60",
        },
        log,
        drive,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--variants", default="bare,unexported,full")
    args = parser.parse_args()
    sink = subprocess.Popen([sys.executable, str(HERE / "otlp_sink.py"), str(SINK_PORT)])
    log = Path(tempfile.mkdtemp(prefix="served-instructions-")) / "callgrind.log"
    try:
        per_request = {}
        for variant in args.variants.split(","):
            small = total_instructions(variant, args.requests, log)
            large = total_instructions(variant, 2 * args.requests, log)
            per_request[variant] = (large - small) / args.requests
            print(
                f"{variant:12} {per_request[variant] / 1000:9.1f} k instructions per served request",
                flush=True,
            )
        if "bare" in per_request:
            for variant, count in per_request.items():
                if variant != "bare":
                    print(f"{variant:12} bare/variant = {per_request['bare'] / count:.3f}", flush=True)
    finally:
        sink.kill()


if __name__ == "__main__":
    main()
