"""Instructions per request, counted by callgrind: a load-independent A/B of telemetry's CPU cost.

    uv run python bench/instructions.py [--requests 1500]

Each variant runs twice in-process under `valgrind --tool=callgrind` (N and 2N requests driven straight
into the ASGI app, no sockets); the difference of the two totals divided by N is the instruction count of
one request, startup and imports cancelled out. Unlike wall-clock figures it does not move when the machine
is busy, so it shows what a change to the hot path did.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "bare": "Litestar alone",
    "metrics": "HTTP metrics + access log, spans off (sampler always_off)",
    "full-unexported": "full telemetry, spans recorded but no exporter",
    "full": "full telemetry, spans batch-exported over OTLP/HTTP (to a sink on loopback)",
    "full-ratio-0.1": "full telemetry with OTEL_TRACES_SAMPLER_ARG=0.1 (parentbased_traceidratio)",
}


def child(variant: str, requests: int, otlp_url: str) -> None:
    """Build the variant, serve `requests` in-process requests, flush spans."""
    sys.path.insert(0, str(HERE))
    from instrumented_server import noop  # noqa: PLC0415
    from litestar import Litestar  # noqa: PLC0415
    from profile_hot_path import drive  # noqa: PLC0415

    from gateway.settings import GatewaySettings  # noqa: PLC0415
    from telemetry import Telemetry, instrument  # noqa: PLC0415

    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    app = Litestar(route_handlers=[noop], logging_config=None)
    telemetry = None
    if variant != "bare":
        options: dict[str, object] = {"tempo_enabled": variant in {"full", "full-ratio-0.1"}}
        options["tempo_otlp_http_endpoint"] = otlp_url
        # Only full batches and the final flush export: under callgrind (~50x slower) a 1 s delay would fire
        # at arbitrary points and make the export's share depend on timing.
        options["otel_bsp_schedule_delay"] = 60_000
        if variant == "metrics":
            options["otel_traces_sampler"] = "always_off"
        if variant == "full-ratio-0.1":
            options |= {"otel_traces_sampler": "parentbased_traceidratio", "otel_traces_sampler_arg": 0.1}
        telemetry = Telemetry.create(GatewaySettings(**options))  # type: ignore[arg-type]
        app = instrument(app, telemetry)
    asyncio.run(drive(app, requests))
    if telemetry is not None:
        telemetry.tracer_provider.force_flush()
        telemetry.tracer_provider.shutdown()


def instructions(variant: str, requests: int, otlp_url: str) -> int:
    """Total instructions of one child run under callgrind."""
    result = subprocess.run(
        [
            "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, __file__, "--child", variant, "--requests", str(requests), "--otlp", otlp_url,
        ],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise RuntimeError(result.stderr[-2000:])
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--child", choices=VARIANTS)
    parser.add_argument("--otlp", default="http://127.0.0.1:14318")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    if args.child:
        child(args.child, args.requests, args.otlp)
        return
    port = 14318
    sink = subprocess.Popen([sys.executable, str(HERE / "otlp_sink.py"), str(port)])
    otlp = f"http://127.0.0.1:{port}"
    try:
        per_request = {}
        for variant in args.variants.split(","):
            small = instructions(variant, args.requests, otlp)
            large = instructions(variant, 2 * args.requests, otlp)
            per_request[variant] = (large - small) / args.requests
            thousands = per_request[variant] / 1000
            print(f"{variant:16} {thousands:9.1f} k instructions/request   {VARIANTS[variant]}")
        if "bare" in per_request:
            print()
            for variant, count in per_request.items():
                if variant != "bare":
                    ratio = per_request["bare"] / count
                    print(f"{variant:16} bare/variant = {ratio:.3f} (throughput kept if CPU-bound)")
    finally:
        sink.kill()


if __name__ == "__main__":
    main()
