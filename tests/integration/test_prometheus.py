"""A real Prometheus (Debian's) scrapes the real services with the project's own configuration.

Prometheus runs `deploy/prometheus/prometheus.yml` with only its targets (and the rule file's path)
rewritten to loopback, and the flags docker-compose.yml gives it. The gateway, admin and log-shipper run as
their users start them; traffic includes errors and chat completions. Then every dashboard panel's PromQL
must return data, and the exemplars Prometheus stored must carry the trace ids the gateway logged.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import pytest
import yaml

from gatewayz_tools.prometheus import compose_flags, rewrite_config
from support.fake_loki import FakeLoki
from support.processes import ServiceProcess, free_port
from support.prometheus import PrometheusProcess
from support.recording import allowed_empty
from telemetry.queries import promql_panels, resolve_variables

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
JOBS = ("gateway", "admin", "log-shipper")
TARGETS = ("static_configs", "dns_sd_configs")
TRACE_ID = re.compile(r"[0-9a-f]{32}\Z")
# A catalog of the shipped models plus one provider that always fails, so 5xx, provider errors and an
# unavailable provider all have series.
DOWN_PROVIDER = """
[[providers]]
name = "local-down"
kind = "local"
timeout_seconds = 5

[[providers.models]]
id = "gatewayz-down"
prompt_price = 0.001
completion_price = 0.001
latency_ms = 5
error_rate = 1.0
"""

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@dataclass
class Traffic:
    """Drives every service in a background thread, bounded in count and time, until stopped."""

    gateway: str
    admin: str
    shipper: str
    key: str
    admin_key: str
    rounds: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def chat(self, client: httpx.Client, model: str, **extra: object) -> None:
        body = {"model": model, "messages": [{"role": "user", "content": "status report"}], **extra}
        self.send(
            client, "POST", f"{self.gateway}/v1/chat/completions", json=body, headers=self.auth(self.key)
        )

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def send(self, client: httpx.Client, method: str, url: str, **kwargs: object) -> None:
        with contextlib.suppress(httpx.HTTPError):
            status = client.request(method, url, **kwargs).status_code  # type: ignore[arg-type]
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def round(self, client: httpx.Client) -> None:
        """One pass: successes, 4xx, 5xx and streams on the gateway; probes and errors on the others."""
        gateway = self.gateway
        self.send(client, "GET", f"{gateway}/api/users/1")
        self.send(client, "GET", f"{gateway}/api/users/987654")  # 404
        self.send(client, "GET", f"{gateway}/no/such/route")  # 404, unmatched
        self.send(client, "GET", f"{gateway}/v1/models")
        self.chat(client, "gatewayz-fast")
        self.chat(client, "gatewayz-fast", temperature=0)  # cacheable: a miss, then hits
        self.chat(client, "gatewayz-fast", stream=True)
        self.chat(client, "gatewayz-flaky")
        self.chat(client, "gatewayz-down")  # every provider call fails: 502
        self.chat(client, "no-such-model")  # 404
        self.send(client, "POST", f"{gateway}/v1/chat/completions", content=b"{", headers=self.auth(self.key))
        self.send(client, "POST", f"{gateway}/v1/chat/completions", json={}, headers=self.auth("wrong"))
        self.send(client, "GET", f"{self.admin}/api/metrics/status")
        self.send(client, "GET", f"{self.admin}/api/metrics/grafana-queries")
        self.send(client, "GET", f"{self.admin}/api/instrumentation/config")  # 401: no key
        self.send(
            client, "GET", f"{self.admin}/api/instrumentation/config", headers=self.auth(self.admin_key)
        )
        self.send(client, "GET", f"{self.shipper}/ready")
        line = msgspec.json.encode({"level": "INFO", "service": "gatewayz-api", "message": "from the test"})
        self.send(client, "POST", f"{self.shipper}/ingest", content=line + b"\n")
        self.rounds += 1

    def run(self, max_rounds: int = 400) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self.stop_event.is_set() and self.rounds < max_rounds:
                self.round(client)
                self.stop_event.wait(1.0)


@dataclass
class Stack:
    prometheus: PrometheusProcess
    gateway: ServiceProcess
    services: dict[str, ServiceProcess]
    loki: FakeLoki
    traffic: Traffic
    started: float


def gateway_catalog(path: Path) -> Path:
    shipped = ROOT / "services" / "gateway" / "src" / "gateway" / "providers" / "default_catalog.toml"
    path.write_text(shipped.read_text() + DOWN_PROVIDER)
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    key, admin_key = f"gw_test_{secrets.token_hex(8)}", f"gw_admin_test_{secrets.token_hex(8)}"
    ports = {job: free_port() for job in JOBS}
    loki = FakeLoki().start()
    closed = f"http://127.0.0.1:{free_port()}"
    gateway = ServiceProcess(
        "gateway",
        {
            "SERVICE_NAME": "gatewayz-api",
            "GATEWAY_BOOTSTRAP_API_KEY": key,
            "GATEWAY_DB_PATH": str(workdir / "gateway.db"),
            "GATEWAY_PROVIDERS_FILE": str(gateway_catalog(workdir / "catalog.toml")),
        },
        workdir,
        port=ports["gateway"],
    )
    # The shipper tails the gateway's stdout file, as it tails Docker's json-file logs in compose.
    shipper = ServiceProcess(
        "log_shipper",
        {
            "LOKI_PUSH_URL": loki.push_url,
            "SHIPPER_FILES": str(gateway.stdout_path),
            "SHIPPER_SPOOL_DIR": str(workdir / "spool"),
        },
        workdir,
        port=ports["log-shipper"],
    )
    # Prometheus scrapes itself and the fake Loki's /metrics too, as deploy/prometheus/prometheus.yml does.
    prometheus_port = free_port()
    targets: dict[str, int | str] = {**ports, "prometheus": prometheus_port, "loki": f"127.0.0.1:{loki.port}"}
    config = rewrite_config(yaml.safe_load(PROMETHEUS_CONFIG.read_text()), targets, PROMETHEUS_CONFIG.parent)
    # Its URL is known before it starts: admin is configured with it.
    prometheus = PrometheusProcess(config, workdir, prometheus_port)
    admin = ServiceProcess(
        "admin",
        {
            "ADMIN_API_KEY": admin_key,
            "GATEWAY_URL": gateway.url,
            "LOG_SHIPPER_URL": shipper.url,
            "PROMETHEUS_URL": prometheus.url,
            "LOKI_URL": loki.url,
            "TEMPO_URL": closed,
        },
        workdir,
        port=ports["admin"],
    )
    services = {"gateway": gateway, "log-shipper": shipper, "admin": admin}
    started: list[ServiceProcess] = []
    traffic = Traffic(gateway.url, admin.url, shipper.url, key, admin_key)
    thread = threading.Thread(target=traffic.run, daemon=True)
    try:
        for service in services.values():
            started.append(service.start())
        prometheus.start()
        thread.start()
        yield Stack(prometheus, gateway, services, loki, traffic, time.time())
    finally:
        traffic.stop_event.set()
        if thread.is_alive():
            thread.join(15)
        prometheus.stop()
        for service in reversed(started):
            service.stop()
        loki.stop()


def wait_for(check, timeout: float, interval: float = 2.0):
    """Poll `check()` until it returns something truthy or `timeout` passes; the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def test_config_differs_from_the_project_only_in_targets_and_rule_paths(tmp_path):
    """The test runs deploy/prometheus/prometheus.yml itself: scrape interval, jobs, exemplars unchanged.

    Only the targets differ: static loopback ones replace compose's names and its DNS discovery of
    `gateway-replicas` (a name that does not resolve outside compose).
    """
    original = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    ports = {"gateway": 1, "admin": 2, "log-shipper": 3, "prometheus": 4, "loki": "loki:3100", "tempo": 6}
    rewritten = rewrite_config(original, ports, PROMETHEUS_CONFIG.parent)
    assert rewritten["global"] == original["global"]
    assert rewritten["global"]["scrape_interval"] == "15s"
    assert rewritten["storage"] == original["storage"]
    targets = {"static_configs", "dns_sd_configs"}
    for before, after in zip(original["scrape_configs"], rewritten["scrape_configs"], strict=True):
        assert {k: v for k, v in before.items() if k not in targets} == {
            k: v for k, v in after.items() if k not in targets
        }
        assert "dns_sd_configs" not in after
    assert [Path(path).name for path in rewritten["rule_files"]] == original["rule_files"]
    assert "--enable-feature=exemplar-storage" in compose_flags()


def test_every_target_is_up(stack):
    """Prometheus scrapes gateway, admin and log-shipper, each as its own job, itself and Loki; all up."""
    jobs = (*JOBS, "prometheus", "loki")

    def all_up() -> dict[str, str] | None:
        targets = stack.prometheus.targets()
        return targets if set(targets.values()) == {"up"} and len(targets) == len(jobs) else None

    targets = wait_for(all_up, timeout=45)
    assert targets == dict.fromkeys(jobs, "up"), (stack.prometheus.targets(), stack.prometheus.log())
    assert stack.prometheus.series_count('up{job=~"gateway|admin|log-shipper"} == 1') == 3


def test_every_dashboard_promql_returns_series(stack):
    """After a few scrapes of real traffic, every Prometheus panel of every dashboard has a series."""
    queries = {
        f"{board.title} / {panel.title}": resolve_variables(panel.expr, ".+")
        for board, panel in promql_panels()
    }
    assert len(queries) >= 17

    def empty() -> dict[str, str]:
        return {name: expr for name, expr in queries.items() if stack.prometheus.series_count(expr) == 0}

    # Panels on a histogram this gateway does not record yet may be empty (support/recording.py).
    allowed = allowed_empty(queries.items(), stack.gateway.url)
    assert len(allowed) <= 4
    # rate(...[1m]) needs two samples in the window: two or three 15 s scrapes after traffic starts.
    missing = wait_for(lambda: set(empty()) <= allowed, timeout=100, interval=3.0) or empty()
    assert missing is True or set(missing) <= allowed, (
        f"no data for {missing}; statuses {stack.traffic.statuses}"
    )
    assert stack.traffic.statuses.get(502, 0) > 0
    assert any(400 <= status < 500 for status in stack.traffic.statuses)


def test_exemplars_carry_the_trace_ids_the_gateway_logged(stack):
    """Exemplars of fastapi_requests_duration_seconds carry trace ids, ones the gateway logged."""

    def exemplars() -> list[dict]:
        data = stack.prometheus.api(
            "query_exemplars",
            query='fastapi_requests_duration_seconds_bucket{job="gateway"}',
            start=str(stack.started - 120),
            end=str(time.time() + 60),
        )
        return [exemplar for series in data for exemplar in series["exemplars"]]

    found = wait_for(exemplars, timeout=60, interval=3.0)
    assert found, stack.prometheus.log()
    trace_ids = {exemplar["labels"]["trace_id"] for exemplar in found}
    assert all(TRACE_ID.match(trace_id) and trace_id != "0" * 32 for trace_id in trace_ids), trace_ids
    logged = set()
    for line in stack.gateway.stdout_lines():
        with contextlib.suppress(msgspec.DecodeError):
            logged.add(msgspec.json.decode(line).get("trace_id"))
    assert trace_ids & logged


def test_gateway_stdout_reaches_loki_through_the_shipper(stack):
    """The gateway's own stdout, tailed by the shipper, lands in Loki under service="gatewayz-api"."""

    def traced_access_lines() -> list[dict]:
        # Waits for the access lines themselves: the shipper's first batch may hold only start-up lines.
        lines = stack.loki.lines(service="gatewayz-api")
        access = [msgspec.json.decode(line) for line in lines if '"Request completed"' in line]
        return [line for line in access if TRACE_ID.match(line.get("trace_id", ""))]

    assert wait_for(traced_access_lines, timeout=30, interval=0.2), stack.loki.lines()[-20:]


def test_alert_rules_load_and_the_failing_provider_alert_goes_pending(stack):
    """The alert rules evaluate cleanly on live data, and the always-failing provider trips its alert."""

    def rules() -> dict[str, dict]:
        groups = stack.prometheus.api("rules", type="alert")["groups"]
        return {rule["name"]: rule for group in groups for rule in group["rules"]}

    def down_provider_alerting() -> dict[str, dict] | None:
        found = rules()
        alerts = found.get("ProviderUnavailable", {}).get("alerts", [])
        evaluated = all(rule.get("lastEvaluation", "").startswith("2") for rule in found.values())
        tripped = any(alert["labels"].get("provider") == "local-down" for alert in alerts)
        return found if evaluated and tripped else None

    found = wait_for(down_provider_alerting, timeout=60, interval=3.0) or rules()
    assert set(found) == {
        "GatewayHighErrorRatio",
        "ProviderUnavailable",
        "InferenceLatencyP95High",
        "ProviderTimeToFirstTokenRising",
        "LogShipperDroppingLines",
        "LogShipperSpoolGrowing",
        "TempoDiscardingSpans",
        "LokiDiscardingLines",
        "SpanExporterDroppingSpans",
        "LogForwarderDroppingLines",
        "TargetDown",
        "GatewayStoreUnavailable",
        "GatewaySettlementsPending",
        "GatewayExpiredHoldsReturned",
        "RedisUnavailable",
    }
    assert {name: rule["health"] for name, rule in found.items()} == dict.fromkeys(found, "ok")
    (alert,) = [a for a in found["ProviderUnavailable"]["alerts"] if a["labels"]["provider"] == "local-down"]
    assert alert["state"] in {"pending", "firing"}
    assert alert["labels"]["job"] == "gateway"
    assert found["TargetDown"]["alerts"] == []
