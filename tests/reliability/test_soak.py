"""Soak: the gateway at a fixed request rate, its log lines tailed by the shipper into Loki, the admin polled.

After a warm-up, RSS of each process is sampled through the run; at the end every request must have
succeeded, every access line must be in (fake) Loki, and no process may have grown by 10 % or more.
CI runs 60 s; `RELIABILITY_FULL=1` runs 10 minutes.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from reliability.budget import pick, record
from reliability.load import rss_mb, run_paced
from reliability.stack import chat, fake_key, gateway
from support.fake_loki import FakeLoki
from support.processes import ServiceProcess, free_port

SECONDS = pick(60, 600)
WARMUP_SECONDS = pick(10, 60)
RATE = 40  # requests a second, well inside what a loaded 2-core machine serves
SAMPLE_EVERY = 5.0

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SECONDS + WARMUP_SECONDS + 180)]


def test_fixed_rate_soak_has_no_errors_and_flat_memory(tmp_path):
    key = fake_key("soak")
    admin_key = fake_key("soak-admin")
    loki = FakeLoki().start()
    gw = gateway(tmp_path / "gateway", key)
    shipper = ServiceProcess(
        "log_shipper",
        {
            "ENVIRONMENT": "test",
            "LOKI_PUSH_URL": loki.push_url,
            "SHIPPER_FILES": f"gatewayz-api={gw.stdout_path}",
            "SHIPPER_SPOOL_DIR": str(tmp_path / "spool"),
            "SHIPPER_BATCH_WAIT_SECONDS": "0.5",
        },
        tmp_path,
    )
    closed = f"http://127.0.0.1:{free_port()}"
    admin = ServiceProcess(
        "admin",
        {
            "ENVIRONMENT": "test",
            "ADMIN_API_KEY": admin_key,
            "GATEWAY_URL": gw.url,
            "LOG_SHIPPER_URL": shipper.url,
            "PROMETHEUS_URL": closed,
            "LOKI_URL": loki.url,
            "TEMPO_URL": closed,
            "PROBE_TIMEOUT_SECONDS": "0.5",
        },
        tmp_path,
    )
    processes = {"gateway": gw, "log_shipper": shipper, "admin": admin}

    bearer = {"Authorization": f"Bearer {key}"}

    def spec(index: int):
        kind = index % 10
        if kind < 6:
            return chat(key, content=f"soak {index % 500}")  # a bounded set of prompts: cache hits too
        if kind < 8:
            return ("GET", "/api/users/1", {"headers": bearer})
        if kind == 8:
            return ("GET", "/v1/models", {"headers": bearer})
        return ("GET", f"/no/such/page/{index}", {})

    stop = threading.Event()
    admin_statuses: dict[int, int] = {}

    def poll_admin() -> None:
        with httpx.Client(base_url=admin.url, timeout=10) as client:
            while not stop.wait(1.0):
                for path in ("/api/instrumentation/health", "/api/metrics/status"):
                    status = client.get(path).status_code
                    admin_statuses[status] = admin_statuses.get(status, 0) + 1

    samples: dict[str, list[float]] = {name: [] for name in processes}

    def sample_rss() -> None:
        while not stop.wait(SAMPLE_EVERY):
            for name, process in processes.items():
                samples[name].append(round(rss_mb(process.process.pid), 1))

    try:
        for process in processes.values():
            process.start()
        poller = threading.Thread(target=poll_admin, daemon=True)
        poller.start()
        warm = run_paced(gw.url, spec, RATE, WARMUP_SECONDS)
        baseline = {name: rss_mb(process.process.pid) for name, process in processes.items()}
        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        result = run_paced(gw.url, spec, RATE, SECONDS)
        final = {name: rss_mb(process.process.pid) for name, process in processes.items()}
        stop.set()
        sampler.join(10)
        poller.join(15)
        requests = warm.count + result.count
        # Every request wrote one access line to the gateway's stdout; the shipper must have shipped it.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            shipped = sum(1 for text in loki.lines(service="gatewayz-api") if '"Request completed"' in text)
            if shipped >= requests:
                break
            time.sleep(0.5)
        growth = {name: final[name] / baseline[name] - 1 for name in processes}
        record(
            "soak",
            seconds=SECONDS,
            warmup_seconds=WARMUP_SECONDS,
            rate_per_second=RATE,
            requests=result.count,
            statuses=dict(sorted(result.statuses.items())),
            transport_errors=dict(result.errors),
            p50_ms=round(result.p50_ms(), 2),
            admin_polls=admin_statuses,
            access_lines_shipped=shipped,
            access_lines_expected=requests,
            rss_mb_after_warmup={name: round(value, 1) for name, value in baseline.items()},
            rss_mb_end={name: round(value, 1) for name, value in final.items()},
            rss_growth={name: round(value, 4) for name, value in growth.items()},
            rss_samples=samples,
        )
        assert not result.errors, result.errors
        assert result.count == int(RATE * SECONDS) or result.count == int(RATE * SECONDS) + 1
        assert set(result.statuses) <= {200, 404}, result.statuses
        assert result.statuses[404] == sum(1 for index in range(result.count) if index % 10 == 9)
        assert set(admin_statuses) == {200}, admin_statuses
        assert shipped >= requests, (shipped, requests)
        for name, value in growth.items():
            assert value < 0.10, (name, baseline[name], final[name], samples[name])
    finally:
        stop.set()
        for process in processes.values():
            process.stop()
        loki.stop()
