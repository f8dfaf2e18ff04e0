"""`make bench`: a short run of every benchmark, summarised in one table.

    uv run python bench/run_all.py

Short means one round of a few seconds each: good for spotting a regression, not for publishing. The
figures in BENCHMARKS.md come from the full commands given there (five rounds, alternating variants).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

RUNS = (
    (
        "instrumentation overhead (no-op route)",
        ["instrumentation_overhead.py", "--rounds", "2", "--seconds", "3"],
        ("full/bare throughput", "full added CPU us/req", "bare req/s", "full req/s"),
    ),
    (
        "log forwarding (no-op route, one line a request)",
        ["log_forwarding_overhead.py", "--rounds", "1", "--seconds", "3", "--lines", "50000"],
        ("forwarding added CPU us/line", "forwarding/full throughput", "in-process write_event ns"),
    ),
    (
        "gateway overhead (local provider, 0 ms)",
        ["gateway_overhead.py", "--rounds", "1", "--seconds", "3", "--rate", "50"],
        ("added p50 ms", "added p99 ms", "added CPU us/req", "gateway/direct throughput"),
    ),
    (
        "gateway in front of an OpenAI-compatible upstream",
        ["upstream_overhead.py", "--rounds", "1", "--seconds", "3"],
        (
            "json c=1 gateway CPU us/req",
            "json c=32 gateway CPU us/req",
            "json c=1 added p50 ms",
            "stream c=32 CPU us/chunk",
            "json CPU c=32 / c=1",
        ),
    ),
    (
        "upstream HTTP client alone (CPU per call)",
        ["http_clients.py", "--rounds", "1", "--requests", "1500"],
        ("httpx/lean CPU json c=32", "aiohttp/lean CPU json c=32", "lean json c=32 CPU us/call"),
    ),
    (
        "log-shipper (file -> fake Loki)",
        ["log_shipper_throughput.py", "--lines", "60000", "--rounds", "1"],
        ("shipper ", "shipper-json ", "anchor ", "shipper / anchor", "shipper-json / anchor"),
    ),
    (
        "log-shipper push encoding (per line)",
        ["log_shipper_push_encoding.py", "--lines", "60000", "--rounds", "1"],
        ("protobuf ", "json "),
    ),
    (
        "key limits (CPU us/req; added vs an unlimited key)",
        ["key_limits.py", "--rounds", "1", "--seconds", "2"],
        ("in-process limited", "in-process budgeted", "redis      limited", "redis      budgeted"),
    ),
    (
        "memory (RSS, MB: idle / peak / after)",
        ["memory.py", "--rounds", "1", "--requests", "600"],
        ("gateway ", "admin ", "log-shipper "),
    ),
    (
        "memory, image-like virtualenvs (idle RSS, MB)",
        ["memory_idle.py", "--rounds", "1"],
        ("gateway ", "admin ", "log-shipper "),
    ),
    (
        "memory soak, gateway before an upstream (image-like virtualenv, 2 min)",
        ["memory_soak.py", "--seconds", "120"],
        ("idle ", "first minute", "second half slope"),
    ),
)


def main() -> int:
    """Run each benchmark, pick its summary lines, print them as one table."""
    rows: list[tuple[str, str]] = []
    failed = 0
    for title, argv, prefixes in RUNS:
        sys.stderr.write(f"running {title}…\n")
        result = subprocess.run(
            [sys.executable, str(HERE / argv[0]), *argv[1:]], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            failed += 1
            rows.append((title, f"FAILED (exit {result.returncode}): {result.stderr.strip()[-200:]}"))
            continue
        for prefix in prefixes:
            line = next((raw for raw in result.stdout.splitlines() if raw.startswith(prefix)), None)
            value = re.sub(r"\s+", " ", line[len(prefix) :].strip(" :")) if line else "(not reported)"
            rows.append((f"{title}: {prefix.strip()}", value))
    width = max(len(name) for name, _ in rows)
    print(f"{'benchmark':{width}}  value (median (min-max) where the script gives one)")
    for name, value in rows:
        print(f"{name:{width}}  {value}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
