"""Services forwarding their own log lines (LOG_FORWARD_URL) to the real log-shipper, which pushes them to
the strict fake Loki: every process started as users start it, over loopback.

A known request sequence arrives line for line with its labels; with the shipper down requests keep their
speed (measured side by side with forwarding off), the lines within the bound arrive once it is back and the
rest are counted as dropped, exactly; SIGTERM flushes within the bound.
"""

from __future__ import annotations

import json
import signal
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.fake_loki import FakeLoki
from support.fake_tempo import FakeTempo
from support.processes import ServiceProcess, free_port
from support.railway import PLACEHOLDER, railway_provided, readme_variables, resolve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

KEY = "test-forwarding-user-key"
CATALOG = """
[[providers]]
name = "local"
kind = "local"

[[providers.models]]
id = "quick"
prompt_price = 0.0001
completion_price = 0.0001
max_output_tokens = 8
latency_ms = 0
"""
FAST_SHIPPER = {
    "SHIPPER_BATCH_WAIT_SECONDS": "0.1",
    "LOKI_RETRY_MIN_SECONDS": "0.05",
    "LOKI_RETRY_MAX_SECONDS": "0.3",
    "SHIPPER_SHUTDOWN_TIMEOUT_SECONDS": "2",
    "ENVIRONMENT": "test",
}
FAST_FORWARD = {
    "LOG_FORWARD_FLUSH_SECONDS": "0.1",
    "LOG_FORWARD_RETRY_MIN_SECONDS": "0.05",
    "LOG_FORWARD_RETRY_MAX_SECONDS": "0.3",
}
GRACEFUL = {0, -signal.SIGTERM}
"""Exit statuses of a graceful stop (uvicorn re-raises the signal it handled), never SIGKILL's."""
OWN_REPORTS = ("Log forwarding", "Log forwarder")
"""Messages of the forwarder's own lines: written to stdout, never forwarded."""


def metric(process: ServiceProcess, name: str, **labels: str) -> float | None:
    text = httpx.get(process.url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def wait_until(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def forwarded_lines(process: ServiceProcess) -> list[str]:
    """What the process wrote to stdout while its forwarder took lines: all but the forwarder's own
    reports, up to "Log forwarder stopped" (what uvicorn writes after it goes to stdout only)."""
    offered = []
    for line in process.stdout_lines():
        message = json.loads(line).get("message", "")
        if message == "Log forwarder stopped":
            break
        if not message.startswith(OWN_REPORTS):
            offered.append(line)
    return offered


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    loki = FakeLoki().start()
    yield loki
    loki.stop()


@pytest.fixture
def started() -> Iterator[list[ServiceProcess]]:
    processes: list[ServiceProcess] = []
    yield processes
    for process in processes:
        process.stop()


def start_shipper(
    tmp_path: Path, loki: FakeLoki, started: list[ServiceProcess], port: int | None = None
) -> ServiceProcess:
    env = {"LOKI_PUSH_URL": loki.push_url, "SHIPPER_SPOOL_DIR": str(tmp_path / "spool"), **FAST_SHIPPER}
    process = ServiceProcess("log_shipper", env, tmp_path, port=port)
    started.append(process)
    return process.start()


def start_gateway(
    tmp_path: Path, started: list[ServiceProcess], name: str, forward_url: str | None, **env: str
) -> ServiceProcess:
    directory = tmp_path / name
    directory.mkdir()
    catalog = directory / "providers.toml"
    catalog.write_text(CATALOG)
    variables = {
        "GATEWAY_DB_PATH": str(directory / "gateway.db"),
        "GATEWAY_PROVIDERS_FILE": str(catalog),
        "GATEWAY_BOOTSTRAP_API_KEY": KEY,
        "ENVIRONMENT": "test",
        **FAST_FORWARD,
        **env,
    }
    if forward_url is not None:
        variables["LOG_FORWARD_URL"] = forward_url
    process = ServiceProcess("gateway", variables, directory)
    started.append(process)
    return process.start(ready_path="/ready")


def chat(client: httpx.Client, url: str, model: str = "quick") -> httpx.Response:
    return client.post(
        url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hello there"}]},
        headers={"Authorization": f"Bearer {KEY}"},
    )


class TestDelivery:
    def test_every_access_and_inference_line_arrives_with_its_labels(self, tmp_path, loki, started):
        """A known sequence (users, chat, an unknown model, a 404), gzip-compressed: each line in Loki,
        labelled by its own service and level and the shipper's environment, byte for byte as written."""
        shipper = start_shipper(tmp_path, loki, started)
        # gzip on (auto would not compress on loopback): the shipper's decompression is on the path too.
        gateway = start_gateway(tmp_path, started, "gw", shipper.url + "/ingest", LOG_FORWARD_GZIP="true")
        with httpx.Client() as client:
            statuses = [client.get(gateway.url + "/api/users/1").status_code for _ in range(10)]
            statuses += [chat(client, gateway.url).status_code for _ in range(5)]
            statuses.append(chat(client, gateway.url, model="no-such-model").status_code)
            statuses.append(client.get(gateway.url + "/nowhere").status_code)
        assert statuses == [200] * 15 + [404, 404]
        served = '"message":"Request completed"'
        probe = '"endpoint":"/ready"'
        stdout = gateway.lines_once(lambda line: served in line and probe not in line, count=17)
        written = [json.loads(line) for line in stdout]
        access = [
            line
            for line in written
            if line["message"] == "Request completed" and line["endpoint"] != "/ready"
        ]
        inference = [line for line in written if "provider" in line]
        assert len(access) == 17
        assert len(inference) == 5
        expected = gateway.stdout_lines()
        arrived = loki.wait_for(len(expected), timeout=15, service="gatewayz-api")
        assert sorted(arrived) == sorted(expected)
        for line in access + inference:
            labels = {"service": "gatewayz-api", "level": line["level"], "environment": "test"}
            assert json.dumps(line, separators=(",", ":")) in loki.lines(**labels)
        assert {s["level"] for s in loki.streams()} >= {"INFO", "WARNING"}
        assert metric(gateway, "log_forwarder_forwarded_lines_total") == len(expected)
        assert metric(gateway, "log_forwarder_dropped_lines_total", reason="queue_full") == 0


class TestShipperDown:
    def test_requests_keep_their_speed_and_drops_are_counted_exactly(self, tmp_path, loki, started):
        """Shipper down: requests all succeed at the speed of a gateway without forwarding (same rounds);
        once it is back the first LOG_FORWARD_MAX_LINES lines arrive and every later one is counted."""
        shipper_port = free_port()
        bound = 300
        forwarding = start_gateway(
            tmp_path,
            started,
            "forwarding",
            f"http://127.0.0.1:{shipper_port}/ingest",
            LOG_FORWARD_MAX_LINES=str(bound),
        )
        plain = start_gateway(tmp_path, started, "plain", None)
        rates: dict[str, list[float]] = {"forwarding": [], "plain": []}
        statuses: set[int] = set()
        with httpx.Client() as client:
            for round_no in range(6):
                order = [("forwarding", forwarding), ("plain", plain)]
                for name, process in order if round_no % 2 == 0 else order[::-1]:
                    began = time.perf_counter()
                    for _ in range(100):
                        statuses.add(client.get(process.url + "/api/users/1").status_code)
                    rates[name].append(100 / (time.perf_counter() - began))
        assert statuses == {200}
        ratios = [f / p for f, p in zip(rates["forwarding"], rates["plain"], strict=True)]
        # Forwarding costs a queue append per line; the ratio is ~1. The bound leaves room for a busy machine.
        assert statistics.median(ratios) > 0.75, rates
        offered = forwarded_lines(forwarding)
        assert len(offered) > bound + 200
        assert metric(forwarding, "log_forwarder_queued_lines") == bound
        assert metric(forwarding, "log_forwarder_retries_total", reason="connection") >= 1

        start_shipper(tmp_path, loki, started, port=shipper_port)
        assert wait_until(lambda: metric(forwarding, "log_forwarder_queued_lines") == 0)
        arrived = loki.wait_for(bound, timeout=10, service="gatewayz-api")
        assert sorted(arrived) == sorted(offered[:bound])  # the oldest waited; the newest were dropped
        dropped = metric(forwarding, "log_forwarder_dropped_lines_total", reason="queue_full")
        assert dropped == len(offered) - bound
        assert metric(forwarding, "log_forwarder_forwarded_lines_total") == bound
        failing = [line for line in forwarding.stdout_lines() if "Log forwarding failing" in line]
        assert 1 <= len(failing) <= 2  # once per 10 s, however many retries there were


class TestShutdown:
    def test_sigterm_flushes_what_is_queued_within_the_bound(self, tmp_path, loki, started):
        """Lines still queued (a 30 s flush interval) are sent at SIGTERM; the exit takes well under 3 s."""
        shipper = start_shipper(tmp_path, loki, started)
        gateway = start_gateway(
            tmp_path, started, "gw", shipper.url + "/ingest", LOG_FORWARD_FLUSH_SECONDS="30"
        )
        with httpx.Client() as client:
            for _ in range(50):
                assert client.get(gateway.url + "/api/users/1").status_code == 200
        began = time.monotonic()
        assert gateway.stop() in GRACEFUL
        assert time.monotonic() - began < 3
        offered = forwarded_lines(gateway)
        stopped = json.loads(gateway.stdout_lines()[-3])  # then uvicorn's last two lines
        assert stopped["message"] == "Log forwarder stopped"
        assert stopped["not_delivered_lines"] == 0
        forwarded = stopped["forwarded_lines"]
        assert sorted(loki.wait_for(forwarded, service="gatewayz-api")) == sorted(offered[:forwarded])
        assert sum(1 for line in offered[:forwarded] if '"endpoint":"/api/users/{user_id}"' in line) == 50

    def test_a_shipper_that_never_answers_cannot_hold_the_exit(self, tmp_path, started):
        """SIGTERM with the shipper's port a black hole: exit within the 3 s bound, the loss counted."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepts, never answers
        try:
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/ingest"
            gateway = start_gateway(tmp_path, started, "gw", url, LOG_FORWARD_TIMEOUT_SECONDS="30")
            with httpx.Client() as client:
                for _ in range(20):
                    assert client.get(gateway.url + "/api/users/1").status_code == 200
            began = time.monotonic()
            assert gateway.stop() in GRACEFUL
            assert time.monotonic() - began < 4.5  # 3 s flush bound plus uvicorn's own shutdown
        finally:
            silent.close()
        stopped = json.loads(gateway.stdout_lines()[-3])
        assert stopped["message"] == "Log forwarder stopped"
        assert stopped["not_delivered_lines"] == len(forwarded_lines(gateway)) - stopped["forwarded_lines"]
        assert stopped["dropped_lines"]["shutdown"] == stopped["not_delivered_lines"] > 0


class TestRailwayRehearsal:
    def test_the_readme_variables_bring_every_services_lines_to_loki(self, tmp_path, loki, started):
        """Gateway, admin and shipper started with the README's Railway variables, resolved as Railway
        would (private domains → loopback, ports pinned to free ones): no stdout is tailed, and lines from
        all three services reach Loki, labelled with the Railway environment's name."""
        variables = readme_variables()
        shipper_env = variables["log-shipper"]
        assert not {"SHIPPER_FILES", "SHIPPER_STDIN"} & set(shipper_env)  # nothing reads their stdout
        tempo = FakeTempo().start()
        ports = {"gateway": free_port(), "admin": free_port(), "log-shipper": free_port()}
        ports |= {"loki": loki.port, "tempo": tempo.port, "prometheus": free_port()}  # Prometheus absent
        for service, port in ports.items():
            variables[service]["PORT"] = str(port)
        resolved = resolve(
            variables,
            lambda service: {**railway_provided(service, "rehearsal"), "RAILWAY_PRIVATE_DOMAIN": "127.0.0.1"},
        )
        admin_key = "gw_admin_rehearsal_only_key"
        state = {
            "gateway": {"GATEWAY_DB_PATH": str(tmp_path / "data" / "gateway.db")},
            "log-shipper": {"SHIPPER_SPOOL_DIR": str(tmp_path / "spool")},
            "admin": {},
        }
        try:
            processes = {}
            for service, module, ready in (
                ("log-shipper", "log_shipper", "/health"),
                ("gateway", "gateway", "/ready"),
                ("admin", "admin", "/health"),
            ):
                env = {
                    name: admin_key
                    if PLACEHOLDER.match(value)
                    else value.replace(
                        "127.0.0.1:4318",
                        f"127.0.0.1:{tempo.port}",  # Tempo's OTLP port, on the fake
                    )
                    for name, value in resolved[service].items()
                }
                # The deliberate differences: loopback instead of every interface on a shared machine, a
                # temporary directory for the volume, and Tempo export on (the harness turns it off).
                env |= {"HOST": "127.0.0.1", "TEMPO_ENABLED": "true", **state[service]}
                process = ServiceProcess(module, env, tmp_path, port=ports[service])
                started.append(process)
                processes[service] = process.start(ready_path=ready)
            with httpx.Client() as client:
                for _ in range(5):
                    assert client.get(processes["gateway"].url + "/api/users/1").status_code == 200
                health = client.get(processes["admin"].url + "/api/instrumentation/health").json()
            by_name = {check["name"]: check["status"] for check in health["checks"]}
            assert {
                name: by_name[name] for name in ("gateway", "log-shipper", "loki", "tempo")
            } == dict.fromkeys(("gateway", "log-shipper", "loki", "tempo"), "ok"), health
            for service in ("gatewayz-api", "gatewayz-admin", "gatewayz-log-shipper"):
                lines = loki.wait_for(1, timeout=15, service=service, environment="rehearsal")
                assert lines, (service, loki.streams())

            # The access lines leave in the forwarder's next batch: the first gateway line may come first.
            def served() -> int:
                lines = loki.lines(service="gatewayz-api")
                return sum('"endpoint":"/api/users/{user_id}"' in line for line in lines)

            wait_until(lambda: served() >= 5, timeout=15)
            assert served() == 5
        finally:
            tempo.stop()
