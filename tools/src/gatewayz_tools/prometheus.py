"""The project's Prometheus config and flags, rewritten for loopback (used by `make run` and the tests)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
COMPOSE_FILE = ROOT / "docker-compose.yml"


def load_config(path: Path = PROMETHEUS_CONFIG) -> dict[str, Any]:
    """The project's prometheus.yml as a dict."""
    return dict(yaml.safe_load(path.read_text()))


def rewrite_config(config: dict[str, Any], ports: dict[str, int | str], config_dir: Path) -> dict[str, Any]:
    """`config` with each job's target on 127.0.0.1:<port> (or `host:port`) and absolute rule paths.

    Jobs without a port (Loki or Tempo not running) are left out; nothing else changes.
    """
    rewritten = copy.deepcopy(config)
    jobs = [job for job in rewritten["scrape_configs"] if job["job_name"] in ports]
    for job in jobs:
        target = ports[job["job_name"]]
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{target}" if isinstance(target, int) else target]}]
    rewritten["scrape_configs"] = jobs
    rewritten["rule_files"] = [str(config_dir / path) for path in config.get("rule_files", [])]
    return rewritten


def compose_flags(compose_file: Path = COMPOSE_FILE) -> list[str]:
    """The flags docker-compose.yml runs Prometheus with, minus the config and storage paths."""
    command = yaml.safe_load(compose_file.read_text())["services"]["prometheus"]["command"]
    return [flag for flag in command if not flag.startswith(("--config.file", "--storage.tsdb.path"))]


def command(config_path: Path, data_dir: Path, port: int, binary: str = "prometheus") -> list[str]:
    """The full command line for Debian's `prometheus` with the project's flags on 127.0.0.1:`port`."""
    flags = [flag for flag in compose_flags() if not flag.startswith("--web.listen-address")]
    return [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        *flags,
    ]


def write_local_config(ports: dict[str, int | str], workdir: Path) -> Path:
    """Write the loopback config into `workdir` and return its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = rewrite_config(load_config(), ports, PROMETHEUS_CONFIG.parent)
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
