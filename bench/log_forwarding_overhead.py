"""Log forwarding cost: the no-op route with full telemetry, forwarding off vs on, bare alongside, one run.

    uv run python bench/log_forwarding_overhead.py [--rounds 5] [--seconds 8] [--connections 16]

Served: `instrumented_server.py` pinned to CPU 0 (variants bare, full, forwarding: full plus every log line
sent to LOG_FORWARD_URL, as plain NDJSON on loopback; forwarding-gzip: the batches compressed), wrk and one
receiver on CPU 1 (`otlp_sink.py` takes both the OTLP exports and the forwarder's `/ingest` batches and
answers 200, the forwarder's ack). Variants alternate within each round;
CPU per request is the server's utime+stime over the run (the forwarder's thread included) ÷ requests. The
route writes one access line per request, so forwarding's added CPU per request is its cost per line. The
server's own counters confirm every line was forwarded and none dropped.

In-process: `JsonSink.write_event` (the access line's path) with forwarding off and on — on, the line is
also appended to the forwarder's queue (its worker not started, so only the hot path is timed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from instrumentation_overhead import alternate, measure, print_medians, summary
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
VARIANTS = ("bare", "full", "forwarding", "forwarding-gzip")


def forwarder_counts(port: int) -> dict[str, float]:
    """The server's log_forwarder_* samples (empty when forwarding is off)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    counts = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("log_forwarder_"):
                reason = sample.labels.get("reason")
                counts[sample.name + (f"{{{reason}}}" if reason else "")] = sample.value
    return counts


def forwarder_figures(port: int) -> dict[str, float]:
    """Lines the forwarder had acknowledged and dropped, once a flush tick has sent the last ones."""
    time.sleep(1.5)
    counts = forwarder_counts(port)
    dropped = sum(value for name, value in counts.items() if name.startswith("log_forwarder_dropped"))
    return {"forwarded": counts["log_forwarder_forwarded_lines_total"], "dropped": dropped}


def in_process(lines: int) -> tuple[float, float]:
    """ns per `write_event` with forwarding off and on (the queue append only), to /dev/null."""
    sys.path.insert(0, str(HERE.parent / "shared" / "src"))
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from gateway.settings import GatewaySettings  # noqa: PLC0415 - the bench's imports stay light
    from telemetry import Telemetry  # noqa: PLC0415

    fields = {"endpoint": "/noop", "method": "GET", "status_code": 200, "duration_ms": 0.412}
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    results = []
    with Path(os.devnull).open("wb") as devnull:
        for forward in (None, "http://127.0.0.1:9/ingest"):
            settings = GatewaySettings(
                tempo_enabled=False,
                log_forward_url=forward,
                log_forward_max_lines=lines + 1,
                log_forward_max_bytes=1024**3,
            )
            sink = Telemetry.create(settings, registry=CollectorRegistry(), log_stream=devnull).log_sink
            best = float("inf")
            for _ in range(5):
                began = time.perf_counter_ns()
                for _ in range(lines):
                    sink.write_event("INFO", "Request completed", fields, trace_id, span_id)
                best = min(best, (time.perf_counter_ns() - began) / lines)
                if forward is not None:
                    sink._forwarder._pending.clear()  # noqa: SLF001 - the bound must not start dropping
                    sink._forwarder._out_lines = sink._forwarder._in_lines  # noqa: SLF001
                    sink._forwarder._out_bytes = sink._forwarder._in_bytes  # noqa: SLF001
            results.append(best)
            sink.forward_to(None)
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--lines", type=int, default=200_000, help="in-process lines per variant")
    args = parser.parse_args()

    sink_port, server_port = 14319, 18901
    sink = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, str(HERE / "otlp_sink.py"), str(sink_port)]
    )
    os.environ["LOG_FORWARD_URL"] = f"http://127.0.0.1:{sink_port}/ingest"
    otlp_url = f"http://127.0.0.1:{sink_port}"
    try:
        results = alternate(
            VARIANTS,
            args.rounds,
            lambda variant: measure(
                variant,
                server_port,
                otlp_url,
                args.seconds,
                args.connections,
                forwarder_figures if variant.startswith("forwarding") else None,
            ),
            lambda result: (
                f"requests {result['requests']:.0f}"
                + (
                    f"  forwarded {result['forwarded']:.0f} dropped {result['dropped']:.0f}"
                    if "forwarded" in result
                    else ""
                )
            ),
        )
    finally:
        sink.kill()

    print_medians(results, width=28)
    rounds = list(zip(*(results[variant] for variant in VARIANTS), strict=True))
    for name, values in (
        ("full/bare throughput", [f["rps"] / b["rps"] for b, f, _, _ in rounds]),
        ("forwarding/bare throughput", [w["rps"] / b["rps"] for b, _, w, _ in rounds]),
        ("forwarding/full throughput", [w["rps"] / f["rps"] for _, f, w, _ in rounds]),
        ("gzip/full throughput", [g["rps"] / f["rps"] for _, f, _, g in rounds]),
    ):
        print(f"{name:28}{statistics.median(values):10.3f} ({min(values):.3f}-{max(values):.3f})")
    added = [w["cpu_us_per_req"] - f["cpu_us_per_req"] for _, f, w, _ in rounds]
    print(f"{'forwarding added CPU us/line':28}{summary(added):>28}")
    gzip_added = [g["cpu_us_per_req"] - f["cpu_us_per_req"] for _, f, _, g in rounds]
    print(f"{'gzip added CPU us/line':28}{summary(gzip_added):>28}")
    forwarded = [r for variant in VARIANTS[2:] for r in results[variant]]
    lost = sum(r["dropped"] for r in forwarded)
    short = sum(r["requests"] > r["forwarded"] for r in forwarded)
    print(
        f"{'forwarded lines dropped':28}{lost:10.0f}   (runs forwarding fewer lines than requests: {short})"
    )
    off, on = in_process(args.lines)
    print(f"{'in-process write_event ns':28}{off:10.0f} off, {on:.0f} on: +{on - off:.0f} ns a line")


if __name__ == "__main__":
    main()
