"""Start real service processes (`python -m <package>`) on loopback and stop them, bounded in time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Self

import httpx


def end(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Send `sig` to a running process, SIGKILL it if it has not exited within `timeout`, and reap it."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def modules_loaded(script: str, home: Path, *args: str) -> list[str]:
    """Run `script` in a fresh interpreter (HOME `home`, a bare environment); the names it printed after
    `loaded:` (the script checks `sys.modules` for what must not have been imported)."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (loaded,) = [line for line in result.stdout.splitlines() if line.startswith("loaded:")]
    return loaded.split()[1:]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """One service started as its users start it, with stdout captured to a file."""

    def __init__(self, module: str, env: Mapping[str, str], log_dir: Path, port: int | None = None) -> None:
        self.module = module
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = log_dir / f"{module}.stdout"
        self.stderr_path = log_dir / f"{module}.stderr"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(log_dir)),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "TEMPO_ENABLED": "false",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_path: str = "/health", timeout: float = 30.0, *, stdin: int | None = None) -> Self:
        """Start (stdin `subprocess.PIPE` to write to it) and wait until `ready_path` answers 200."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=self.env,
            stdin=stdin,
            stdout=self.stdout_path.open("ab"),
            stderr=self.stderr_path.open("ab"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.module} exited {self.process.returncode}: {self.stderr()}")
            try:
                if httpx.get(self.url + ready_path, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.module} not ready on {self.url}{ready_path}: {self.stderr()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit status."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def stdout_lines(self) -> list[str]:
        """What the process wrote to stdout so far."""
        return self.stdout_path.read_text(errors="replace").splitlines() if self.stdout_path.exists() else []

    def lines_once(self, matches: Callable[[str], bool], count: int, timeout: float = 10.0) -> list[str]:
        """Stdout once at least `count` lines satisfy `matches` (or at `timeout`, as it is then).

        The access line is written after the response has gone: a client can read its answer before the
        line of that request is in the file, and on a busy machine it sometimes does.
        """
        deadline = time.monotonic() + timeout
        while True:
            lines = self.stdout_lines()
            if sum(1 for line in lines if matches(line)) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    def stderr(self) -> str:
        """What the process wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
