"""What the server benchmarks share: process CPU from /proc, wrk runs, and median (min-max) summaries."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    """`VmRSS` of `pid`, in MB (0 once it has exited)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    """Until `url` answers 200; fails after `timeout` seconds, or at once if `proc` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    msg = f"{url} not healthy"
    raise RuntimeError(msg)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, then a kill after 10 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, request count and latency percentiles (ms)."""

    rps: float
    requests: int
    p50: float
    p99: float


def _latency_ms(out: str, label: str) -> float:
    match = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no {label} latency:\n{out}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, seconds: float, connections: int, script: Path, cpu: int = 1) -> WrkResult:
    """`wrk -t1 -c{connections} --latency` pinned to `cpu`; fails on any non-2xx answer or socket error."""
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(cpu),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(out)
    return WrkResult(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        requests=int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        p50=_latency_ms(out, "50%"),
        p99=_latency_ms(out, "99%"),
    )


def summary(values: list[float], fmt: str = "{:.3f}") -> str:
    """`median (min-max)`."""
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def post_script(body: bytes, key: str | None = None) -> str:
    """A wrk Lua script POSTing `body` as JSON (with a Bearer key when given)."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = '{body.decode()}'",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    if key is not None:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {key}"')
    return "\n".join(lines) + "\n"


def callgrind_instructions(
    argv: list[str],
    env: dict[str, str],
    log: Path,
    drive: Callable[[subprocess.Popen[bytes]], None],
    out_file: str = "/dev/null",
) -> int:
    """Run `argv` under callgrind, `drive` it (requests over loopback), SIGINT it; instructions it ran.

    valgrind's report goes to `log`, not a pipe: a pipe nobody reads would fill up and stall the server.
    `out_file` keeps callgrind's profile (for `callgrind_annotate`).
    """
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", f"--log-file={log}", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        drive(process)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(600)
    report = log.read_text()
    match = re.search(r"Collected : (\d+)", report)
    if match is None:
        raise RuntimeError(report[-2000:])
    return int(match.group(1))


def first_connection(
    port: int,
    exchange: Callable[[http.client.HTTPConnection], None],
    server: subprocess.Popen[bytes],
    timeout: float = 600,
) -> http.client.HTTPConnection:
    """A keep-alive connection on which `exchange` succeeded, once a (slowly starting) server answers."""
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited {server.returncode} before answering")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            exchange(connection)
        except OSError:
            connection.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        else:
            return connection


def upstream_command(port: int, chunks: int, interval_ms: float) -> list[str]:
    """`bench/openai_upstream.py` on `port`, streams of `chunks` content chunks `interval_ms` apart."""
    script = Path(__file__).resolve().parent / "openai_upstream.py"
    options = ["--chunks", str(chunks), "--chunk-interval-ms", str(interval_ms)]
    return [sys.executable, str(script), str(port), *options]


def image_python(service: str, venv: Path, tree: Path | None = None) -> str:
    """Build `venv` with what `service`'s image installs, from `tree` (this checkout by default); its python.

    As `services/Dockerfile` runs it: `uv sync --frozen --no-dev --package gatewayz-<service> --no-editable`,
    bytecode compiled; uv's cache serves it offline.
    """
    subprocess.run(
        [
            "uv",
            "sync",
            "--frozen",
            "--no-dev",
            "--package",
            f"gatewayz-{service}",
            "--no-editable",
            "--quiet",
        ],
        cwd=tree or Path(__file__).resolve().parents[1],
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_COMPILE_BYTECODE": "1"},
        check=True,
    )
    return str(venv / "bin" / "python")


def free_port() -> int:
    """A TCP port nothing listens on now (benchmarks running side by side must not collide)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
