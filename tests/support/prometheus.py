"""Debian's `prometheus` run by tests on a free loopback port with a given config and a throwaway TSDB."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from gatewayz_tools.prometheus import command as prometheus_command
from support.processes import end


class PrometheusProcess:
    """Debian's `prometheus` on a free loopback port, with a config file and a throwaway TSDB."""

    def __init__(self, config: dict, workdir: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "prometheus.log"
        self.command = prometheus_command(self.config_path, workdir / "tsdb", port)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> PrometheusProcess:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=self.log_path.open("wb")
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.process.returncode}: {self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"prometheus not ready: {self.log()}")

    def stop(self) -> None:
        end(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def api(self, path: str, **params: str) -> dict:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10.0)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def series_count(self, expr: str) -> int:
        return len(self.api("query", query=expr)["result"])

    def targets(self) -> dict[str, str]:
        return {t["labels"]["job"]: t["health"] for t in self.api("targets", state="active")["activeTargets"]}
