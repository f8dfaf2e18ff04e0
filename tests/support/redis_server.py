"""Debian's `redis-server` run by tests on a free loopback port, no persistence, in a temporary directory."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from support.processes import end, free_port


class RedisServer:
    """A private Redis: `start()`, `url(db)`, `flush()`, `stop()`; `start()` again after a stop (outages)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run scripts/ensure-databases.sh")
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gatewayz-redis-"))
        self.log_path = self.dir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Self:
        """Run redis-server (no RDB, no AOF) and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--daemonize",
                "no",
                "--logfile",
                str(self.log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.process.returncode}: {self.log()}")
            with contextlib.suppress(OSError):
                if self.command("PING") == "+PONG":
                    return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server not ready on port {self.port}: {self.log()}")

    def stop(self) -> None:
        """SIGTERM (nothing to save), SIGKILL if it hangs."""
        end(self.process)

    def destroy(self) -> None:
        """Stop and delete the directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: int = 0) -> str:
        """`redis://127.0.0.1:<port>/<db>`."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def command(self, *words: str) -> str:
        """Send one inline command and return the first line of the reply (a test's quick look)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(" ".join(words).encode() + b"\r\n")
            return sock.makefile("rb").readline().decode().rstrip("\r\n")

    def flush(self) -> None:
        """Empty every database."""
        assert self.command("FLUSHALL") == "+OK"

    def log(self) -> str:
        """The end of the server's log."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""
