"""The services as users start them, configured for reliability runs: fast catalog, fake keys, temp dirs."""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Self

from reliability.load import RequestSpec
from support.processes import ServiceProcess

FAST_MODEL = "reliability-fast"
"""A local model with no simulated latency or errors: the gateway's own cost is all there is to measure."""
FAST_CATALOG = f"""
[[providers]]
name = "local"
kind = "local"
timeout_seconds = 30

[[providers.models]]
id = "{FAST_MODEL}"
prompt_price = 0.0000001
completion_price = 0.0000001
latency_ms = 0
"""


def fake_key(prefix: str) -> str:
    """An obviously fake key, new each run: never a real or documented one."""
    return f"{prefix}-fake-{secrets.token_hex(8)}"


def gateway(workdir: Path, key: str, **env: str) -> ServiceProcess:
    """A gateway on a fast local-only catalog, demo user 1 holding `key` and credits for any run."""
    workdir.mkdir(parents=True, exist_ok=True)
    catalog = workdir / "providers.toml"
    catalog.write_text(FAST_CATALOG)
    return ServiceProcess(
        "gateway",
        {
            "ENVIRONMENT": "test",
            "GATEWAY_DB_PATH": str(workdir / "gateway.db"),
            "GATEWAY_PROVIDERS_FILE": str(catalog),
            "GATEWAY_BOOTSTRAP_API_KEY": key,
            "GATEWAY_DEMO_CREDITS": "1000000000",
            **env,
        },
        workdir,
    )


def chat(key: str, model: str = FAST_MODEL, content: str = "hello", **extra: Any) -> RequestSpec:
    """One non-streaming chat completion request."""
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return ("POST", "/v1/chat/completions", {"json": body, "headers": {"Authorization": f"Bearer {key}"}})


def stop_timed(process: ServiceProcess, timeout: float = 15.0) -> tuple[float, int | None]:
    """SIGTERM and wait: (seconds until the process exited, its exit status)."""
    started = time.monotonic()
    status = process.stop(timeout)
    return time.monotonic() - started, status


class BlackHole:
    """A TCP listener that never accepts: connections complete in the kernel, then nothing ever answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


class PipedServiceProcess(ServiceProcess):
    """A `ServiceProcess` whose stdin is a pipe the test writes to (the log-shipper's pipe mode)."""

    def start(self, ready_path: str = "/health", timeout: float = 30.0, *, stdin: int | None = None) -> Self:
        """Start with stdin on a pipe and wait until `ready_path` answers 200."""
        return super().start(ready_path, timeout, stdin=subprocess.PIPE if stdin is None else stdin)

    def write(self, data: bytes) -> None:
        """Write to the process's stdin."""
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()
