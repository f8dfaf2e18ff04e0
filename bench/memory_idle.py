"""Each service's RSS after start-up, run from a virtualenv built as its image builds it.

    uv run python bench/memory_idle.py [--rounds 3] [--before <checkout>]

For each service, a virtualenv with what its image installs (`uv sync --frozen --no-dev --package
gatewayz-<service> --no-editable`, as `services/Dockerfile` runs it; uv's cache serves it offline) in a
temporary directory; `--before` builds the same from another checkout (a `git worktree` of an older commit)
and alternates the two per round. Each start: the service's defaults (the gateway on SQLite with the `local`
provider and the span exporter on, pointed at a closed port; the shipper with Loki off), `/health` awaited,
one request (a chat completion for the gateway, `/metrics` for the others), 3 s, then `VmRSS`. Prints each
start and the median (min-max) per service and tree, in MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from harness import free_port, image_python, rss_mb, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"gateway": "gateway", "admin": "admin", "log-shipper": "log_shipper"}


def build(tree: Path, workdir: Path, label: str) -> dict[str, str]:
    """One image-like virtualenv per service from `tree`; their interpreters."""
    return {service: image_python(service, workdir / f"{label}-{service}", tree) for service in SERVICES}


def idle_rss(python: str, service: str, workdir: Path) -> float:
    """Start `service`, make its one request, and read its RSS 3 s later."""
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "ENVIRONMENT": "bench",
        "TEMPO_OTLP_HTTP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "GATEWAY_DB_PATH": str(workdir / f"gateway-{time.monotonic_ns()}.db"),
        "GATEWAY_BOOTSTRAP_API_KEY": "bench-not-a-secret-key",
        "ADMIN_API_KEY": "bench-admin-" + os.urandom(12).hex(),
        "LOKI_ENABLED": "false",
        "SHIPPER_SPOOL_DIR": str(workdir / f"spool-{time.monotonic_ns()}"),
    }
    proc = subprocess.Popen(
        [python, "-m", SERVICES[service]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/health", proc)
        if service == "gateway":
            answer = httpx.post(
                f"{url}/v1/chat/completions",
                json={"model": "gatewayz-fast", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": "Bearer bench-not-a-secret-key"},
                timeout=10,
            )
        else:
            answer = httpx.get(f"{url}/metrics", timeout=10)
        answer.raise_for_status()
        time.sleep(3)
        return rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another checkout to compare with (built the same way)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="memory-idle-"))
    try:
        trees = {"current": build(ROOT, workdir, "current")}
        if args.before:
            trees["before"] = build(args.before.resolve(), workdir, "before")
        figures: dict[tuple[str, str], list[float]] = {}
        for round_no in range(args.rounds):
            order = list(trees) if round_no % 2 == 0 else list(trees)[::-1]
            for service in SERVICES:
                for label in order:
                    value = idle_rss(trees[label][service], service, workdir)
                    figures.setdefault((service, label), []).append(value)
                    print(f"round {round_no + 1} {service:12} {label:8} {value:6.1f} MB", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    for (service, label), values in figures.items():
        median = statistics.median(values)
        print(f"{service:12} {label:8} {median:6.1f} MB ({min(values):.1f}-{max(values):.1f})")


if __name__ == "__main__":
    main()
