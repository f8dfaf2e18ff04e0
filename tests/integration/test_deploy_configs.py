"""The deploy stack's files: validated by the real tools where they exist, and against each other."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml
from loguru import logger

from support.grafana_env import expand_value
from support.processes import free_port
from telemetry.dashboards import DATASOURCE_UIDS, render_dashboard, stale_files
from telemetry.pipeline import LOG_FORWARDERS, LOG_SHIPPER, LOKI, SPAN_EXPORTERS, TEMPO
from telemetry.queries import DASHBOARDS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RAILWAY_PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "railway" / "prometheus.yml"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yml"
DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
SERVICES = {"gateway": 8000, "admin": 8001, "log-shipper": 8002}
BACKENDS = {"loki": 3100, "tempo": 3200}
"""Backends Prometheus scrapes for their own counters of received and discarded signals."""
MODULES = {"gateway": "gateway", "admin": "admin", "log-shipper": "log_shipper"}

pytestmark = pytest.mark.integration


def mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """Target → (source, read-only) of a service's volumes, in docker-compose 1.29's `source:target[:ro]`."""
    found = {}
    for volume in service["volumes"]:
        source, target, *mode = volume.split(":")
        found[target] = (source, mode == ["ro"])
    return found


def load(path: Path):
    return yaml.safe_load(path.read_text())


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env=env)


def compose_config(env_file: str = ".env.example") -> subprocess.CompletedProcess[str]:
    # Only PATH: a developer's own ADMIN_API_KEY or .env must not make this pass or fail.
    return run(
        "docker-compose",
        "--env-file",
        env_file,
        "-f",
        "docker-compose.yml",
        "config",
        env={"PATH": os.environ["PATH"]},
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    result = compose_config()
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict]:
    return {source["uid"]: source for source in load(DATASOURCES)["datasources"]}


class TestPrometheus:
    def test_promtool_accepts_both_configs(self):
        """`promtool check config` passes for the compose and the Railway configuration, rules included."""
        rules = sum(len(group["rules"]) for group in load(DEPLOY / "prometheus" / "alerts.yml")["groups"])
        assert rules >= 6
        for config in (PROMETHEUS_CONFIG, RAILWAY_PROMETHEUS_CONFIG):
            result = run("promtool", "check", "config", str(config))
            assert result.returncode == 0, result.stdout + result.stderr
            assert f"SUCCESS: {rules} rules found" in result.stdout

    def test_alert_rule_unit_tests_pass(self):
        """`promtool test rules` passes every alert scenario."""
        tests = sorted(str(path) for path in (DEPLOY / "prometheus" / "tests").glob("*.yml"))
        assert tests
        result = run("promtool", "test", "rules", *tests)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_every_required_alert_exists(self):
        """5xx ratio, provider down, inference p95, shipper drops and spool growth, and target down."""
        (group,) = load(DEPLOY / "prometheus" / "alerts.yml")["groups"]
        rules = {rule["alert"]: rule["expr"] for rule in group["rules"]}
        assert 'status_code=~"5.."' in rules["GatewayHighErrorRatio"]
        assert "provider_availability == 0" in rules["ProviderUnavailable"]
        assert "histogram_quantile(0.95" in rules["InferenceLatencyP95High"]
        assert "log_shipper_dropped_lines_total" in rules["LogShipperDroppingLines"]
        assert "log_shipper_spool_bytes" in rules["LogShipperSpoolGrowing"]
        assert rules["TargetDown"] == "up == 0"
        # SPEC §11's histogram, per provider, against its own recent past.
        ttft = rules["ProviderTimeToFirstTokenRising"]
        assert "model_inference_time_to_first_token_seconds_bucket" in ttft
        assert "sum by (le, provider)" in ttft

    def test_discard_alerts_use_the_pipeline_catalog(self):
        """Tempo, Loki, exporter, shipper and forwarder discards alert on the very expressions that admin's
        health, `make verify` and the Pipeline health dashboard use (telemetry/pipeline.py)."""
        (group,) = load(DEPLOY / "prometheus" / "alerts.yml")["groups"]
        rules = {rule["alert"]: rule["expr"].strip() for rule in group["rules"]}
        assert rules["TempoDiscardingSpans"] == TEMPO.increase
        assert rules["LokiDiscardingLines"] == LOKI.increase
        assert rules["SpanExporterDroppingSpans"] == SPAN_EXPORTERS.increase
        assert rules["LogForwarderDroppingLines"] == LOG_FORWARDERS.increase
        assert rules["LogShipperDroppingLines"] == LOG_SHIPPER.increase.replace(
            "(reason, job)", "(job, instance, reason)"
        )

    def test_scrapes_each_service_by_compose_name_every_15s(self, compose):
        """One job per service, named after it, scraping `<service>:<port>` every 15 s."""
        config = load(PROMETHEUS_CONFIG)
        assert config["global"]["scrape_interval"] == "15s"
        assert config["storage"]["exemplars"]["max_exemplars"] > 0
        jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
        assert jobs == {name: [f"{name}:{port}"] for name, port in {**SERVICES, **BACKENDS}.items()} | {
            "prometheus": ["localhost:9090"]
        }
        assert set(jobs) <= set(compose["services"])
        command = compose["services"]["prometheus"]["command"]
        assert "--enable-feature=exemplar-storage" in command
        assert "--web.enable-remote-write-receiver" in command

    def test_railway_finds_every_replica_by_dns(self):
        """On Railway each job resolves `<service>.railway.internal` A records on the service's port."""
        config = load(RAILWAY_PROMETHEUS_CONFIG)
        assert config["global"]["scrape_interval"] == "15s"
        found = {job["job_name"]: job for job in config["scrape_configs"]}
        assert found.pop("prometheus")["static_configs"] == [{"targets": ["localhost:9090"]}]
        for job in found.values():
            (sd,) = job["dns_sd_configs"]
            assert sd["names"] == [f"{job['job_name']}.railway.internal"]
            assert sd["type"] == "A"
            assert sd["port"] == {**SERVICES, **BACKENDS}[job["job_name"]]
        assert set(found) == set(SERVICES) | set(BACKENDS)

    def test_railway_image_ships_the_config_with_its_rules(self):
        """The Railway Prometheus image copies the config and the rule file where the config looks for it."""
        directory = DEPLOY / "prometheus" / "railway"
        dockerfile = (directory / "Dockerfile").read_text()
        copies = {
            Path(dest): ROOT / source
            for source, dest in re.findall(r"^COPY (\S+) (\S+)$", dockerfile, re.MULTILINE)
        }
        assert all(source.is_file() for source in copies.values())
        (config_in_image,) = [dest for dest, source in copies.items() if source == RAILWAY_PROMETHEUS_CONFIG]
        assert f"--config.file={config_in_image}" in dockerfile
        assert "--enable-feature=exemplar-storage" in dockerfile
        for rule_file in load(RAILWAY_PROMETHEUS_CONFIG)["rule_files"]:
            in_image = Path(os.path.normpath(config_in_image.parent / rule_file))
            assert copies[in_image] == DEPLOY / "prometheus" / "alerts.yml"
        railway = json.loads((directory / "railway.json").read_text())
        assert ROOT / railway["build"]["dockerfilePath"] == directory / "Dockerfile"
        assert railway["deploy"]["healthcheckPath"] == "/-/ready"


class _NoDuplicateKeys(yaml.SafeLoader):
    """PyYAML (and docker-compose 1.29) keep the last of two equal keys silently; Compose v2's parser and
    Kubernetes refuse the file. This loader refuses it too."""

    def construct_mapping(self, node, deep=False):
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges may repeat; compose's own keys are plain scalars
            key = key_node.value
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def test_no_yaml_file_repeats_a_key():
    """docker-compose.yml and every YAML file under deploy/ parse with duplicate keys refused."""
    files = [
        ROOT / "docker-compose.yml",
        *sorted((ROOT / "deploy").rglob("*.yml")),
        *sorted((ROOT / "deploy").rglob("*.yaml")),
    ]
    assert len(files) > 5
    for path in files:
        yaml.load(path.read_text(), Loader=_NoDuplicateKeys)  # noqa: S506 - a SafeLoader subclass


class TestCompose:
    def test_every_build_names_a_dockerfile_that_exists(self):
        """Every service that builds (in every profile) names an existing Dockerfile, and the shared one gets
        the SERVICE it builds; `docker-compose config` does not look at either."""
        services = load(ROOT / "docker-compose.yml")["services"]
        builds = {name: service["build"] for name, service in services.items() if "build" in service}
        assert {"gateway", "admin", "log-shipper", "gateway-replicas"} <= set(builds)
        for name, build in builds.items():
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
            if build["dockerfile"] == "services/Dockerfile":
                assert (ROOT / "services" / build["args"]["SERVICE"]).is_dir(), name

    def test_docker_compose_accepts_the_file(self):
        """Debian's `docker-compose config -q` accepts docker-compose.yml with the example .env."""
        result = run(
            "docker-compose", "--env-file", ".env.example", "-f", "docker-compose.yml", "config", "-q"
        )
        assert result.returncode == 0, result.stderr

    def test_secrets_are_required_not_defaulted(self, tmp_path):
        """Without .env the stack refuses to start and names the missing secret: no default password."""
        empty = tmp_path / "empty.env"
        empty.write_text("")
        result = compose_config(str(empty))
        assert result.returncode != 0
        assert "GRAFANA_ADMIN_PASSWORD" in result.stderr or "ADMIN_API_KEY" in result.stderr

    def test_ports(self, compose):
        """The published ports are those SPEC §1 lists."""
        expected = {
            "prometheus": {9090},
            "grafana": {3000},
            "loki": {3100},
            "tempo": {3200, 4317, 4318},
            **{name: {port} for name, port in SERVICES.items()},
        }
        for name, ports in expected.items():
            published = {int(port["published"]) for port in compose["services"][name]["ports"]}
            assert published == ports, name

    def test_every_image_is_pinned_to_a_release(self, compose):
        """No `latest` and no untagged image; Loki and Tempo at exactly the versions configured for."""
        images = {name: service["image"] for name, service in compose["services"].items()}
        for name, image in images.items():
            _, _, tag = image.rpartition(":")
            assert tag, name
            assert tag != "latest", name
            # PostgreSQL numbers its releases major.minor (17.6); everything else major.minor.patch.
            assert re.fullmatch(r"v?\d+\.\d+\.\d+" if name != "postgres" else r"\d+\.\d+", tag), image
        assert images["loki"] == "grafana/loki:3.7.6"
        assert images["tempo"] == "grafana/tempo:3.0.3"

    def test_healthchecks_and_conditional_dependencies(self, compose):
        """Every container has a healthcheck; every dependency waits on a condition."""
        for name, service in compose["services"].items():
            assert service["healthcheck"]["test"], name
            for dependency, rule in service.get("depends_on", {}).items():
                assert rule["condition"] in {"service_healthy", "service_started"}, (name, dependency)
                assert dependency in compose["services"]
        assert compose["services"]["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"

    def test_named_volumes_hold_the_state(self, compose):
        """Databases, spool and Grafana state live in named volumes."""
        assert set(compose["volumes"]) >= {
            "prometheus-data",
            "loki-data",
            "tempo-data",
            "grafana-data",
            "shipper-spool",
            "gateway-data",
        }

    def test_services_stdout_reaches_the_shipper_unchanged(self, compose):
        """Services log to json-file, tailed read-only by the shipper; the backends log elsewhere."""
        shipper = compose["services"]["log-shipper"]
        assert shipper["environment"]["SHIPPER_FILES"] == "/var/lib/docker/containers/*/*-json.log"
        assert shipper["environment"]["LOKI_PUSH_URL"] == "http://loki:3100/loki/api/v1/push"
        assert mounts(shipper)["/var/lib/docker/containers"] == ("/var/lib/docker/containers", True)
        for name in SERVICES:
            assert compose["services"][name]["logging"]["driver"] == "json-file", name
        for name in ("prometheus", "loki", "tempo", "grafana"):
            assert compose["services"][name]["logging"]["driver"] == "local", name

    def test_grafana_mounts_provisioning_and_dashboards(self, compose):
        """Grafana reads the provisioning folder and the dashboards folder the provider points at."""
        grafana = compose["services"]["grafana"]
        found = mounts(grafana)
        assert found["/etc/grafana/provisioning"] == (str(DEPLOY / "grafana" / "provisioning"), True)
        (provider,) = load(DASHBOARD_PROVIDERS)["providers"]
        assert found[provider["options"]["path"]] == (str(DEPLOY / "grafana" / "dashboards"), True)
        assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "<choose a password>"


class TestScaleProfile:
    """`docker compose --profile scale up`: PostgreSQL, Redis and the gateway at 3 replicas sharing them."""

    def test_profile_services_start_only_with_the_profile(self, compose):
        """Plain `docker compose up` runs the embedded stack; the profile adds exactly three services."""
        profiled = {name for name, service in compose["services"].items() if service.get("profiles")}
        assert profiled == {"postgres", "redis", "gateway-replicas"}
        assert all(compose["services"][name]["profiles"] == ["scale"] for name in profiled)

    def test_replicas_share_postgres_and_redis_once_both_are_healthy(self, compose):
        replicas = compose["services"]["gateway-replicas"]
        assert replicas["deploy"]["replicas"] == 3
        environment = replicas["environment"]
        assert environment["DATABASE_URL"].startswith("postgresql://gatewayz:")
        assert environment["DATABASE_URL"].endswith("@postgres:5432/gatewayz")
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert replicas["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert replicas["depends_on"]["redis"]["condition"] == "service_healthy"
        assert [port["published"] for port in replicas["ports"]] == ["8010-8012"]
        assert compose["services"]["gateway"]["environment"].get("DATABASE_URL") is None  # embedded default

    def test_database_and_cache_keep_state_in_named_volumes(self, compose):
        assert mounts(compose["services"]["postgres"])["/var/lib/postgresql/data"] == ("postgres-data", False)
        assert mounts(compose["services"]["redis"])["/data"] == ("redis-data", False)
        assert "pg_isready" in " ".join(compose["services"]["postgres"]["healthcheck"]["test"])
        assert compose["services"]["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]

    def test_admin_watches_the_embedded_gateway_unless_told_the_replicas(self, compose, tmp_path):
        """Admin's GATEWAY_URL: the embedded gateway, unless ADMIN_GATEWAY_URL in .env says otherwise."""
        assert compose["services"]["admin"]["environment"]["GATEWAY_URL"] == "http://gateway:8000"
        env_file = tmp_path / "scale.env"
        example = (ROOT / ".env.example").read_text()
        env_file.write_text(
            example.replace("\nADMIN_GATEWAY_URL=\n", "\nADMIN_GATEWAY_URL=http://gateway-replicas:8000\n")
        )
        assert "ADMIN_GATEWAY_URL=http://gateway-replicas:8000" in env_file.read_text()
        result = compose_config(str(env_file))
        assert result.returncode == 0, result.stderr
        admin = yaml.safe_load(result.stdout)["services"]["admin"]
        assert admin["environment"]["GATEWAY_URL"] == "http://gateway-replicas:8000"

    def test_prometheus_finds_every_replica_by_dns_on_the_service_name(self, compose):
        """As on Railway: an A lookup of the compose service name gives one target per replica."""
        (job,) = [job for job in load(PROMETHEUS_CONFIG)["scrape_configs"] if job["job_name"] == "gateway"]
        (sd,) = job["dns_sd_configs"]
        assert sd["names"] == ["gateway-replicas"]
        assert (sd["type"], sd["port"]) == ("A", 8000)
        assert "gateway-replicas" in compose["services"]


class TestGrafana:
    def test_datasource_uids_are_the_ones_dashboards_use(self, datasources):
        """The provisioned uids are the dashboards' uids, and every panel's datasource exists."""
        assert {uid: source["type"] for uid, source in datasources.items()} == {
            uid: kind for kind, uid in DATASOURCE_UIDS.items()
        }
        for board in DASHBOARDS:
            for panel in render_dashboard(board)["panels"]:
                assert panel["datasource"]["uid"] in datasources, panel["title"]

    def test_correlation_links_point_at_existing_datasources(self, datasources, compose):
        """Exemplars and Loki's derived field open Tempo; Tempo opens Loki, Prometheus and the service map."""
        prometheus = datasources["prometheus"]["jsonData"]
        assert prometheus["timeInterval"] == load(PROMETHEUS_CONFIG)["global"]["scrape_interval"]
        assert prometheus["exemplarTraceIdDestinations"] == [{"name": "trace_id", "datasourceUid": "tempo"}]
        (derived,) = datasources["loki"]["jsonData"]["derivedFields"]
        assert derived["datasourceUid"] == "tempo"
        tempo = datasources["tempo"]["jsonData"]
        assert tempo["tracesToLogsV2"]["datasourceUid"] == "loki"
        assert "$${__trace.traceId}" in tempo["tracesToLogsV2"]["query"]
        assert tempo["tracesToMetrics"]["datasourceUid"] == "prometheus"
        assert tempo["serviceMap"]["datasourceUid"] == "prometheus"
        grafana_env = compose["services"]["grafana"]["environment"]
        for source in datasources.values():
            host = expand_value(source["url"], grafana_env).split("//")[1].split(":")[0]
            assert host in {"prometheus", "loki", "tempo"}

    def test_dashboard_provider_loads_the_generated_folder(self):
        """One file provider, reading the dashboards directory, no UI edits kept."""
        (provider,) = load(DASHBOARD_PROVIDERS)["providers"]
        assert provider["type"] == "file"
        assert provider["allowUiUpdates"] is False

    def test_committed_dashboards_are_what_the_catalog_generates(self):
        """deploy/grafana/dashboards/*.json equals the generator's output (run `make dashboards` if not)."""
        directory = DEPLOY / "grafana" / "dashboards"
        assert stale_files(directory) == []
        assert sorted(path.name for path in directory.glob("*.json")) == sorted(
            f"{board.uid}.json" for board in DASHBOARDS
        )
        fastapi = json.loads((directory / "gatewayz-fastapi.json").read_text())
        assert fastapi["title"] == "FastAPI Dashboard"
        assert len(fastapi["panels"]) == 8


class TestLokiDerivedField:
    @pytest.fixture
    def pattern(self, datasources) -> re.Pattern[str]:
        (derived,) = datasources["loki"]["jsonData"]["derivedFields"]
        return re.compile(derived["matcherRegex"])

    @pytest.fixture
    def real_line(self, gateway_telemetry, log_capture) -> str:
        with gateway_telemetry.tracer.start_as_current_span("GET /api/users/{user_id}"):
            logger.info("Request completed", endpoint="/api/users/{user_id}", status_code=200)
        (line,) = [
            text for text in log_capture.getvalue().decode().splitlines() if "Request completed" in text
        ]
        return line

    def test_matches_the_trace_id_of_a_real_log_line(self, pattern, real_line):
        """The regex captures exactly the 32-hex trace_id the JSON sink wrote."""
        trace_id = json.loads(real_line)["trace_id"]
        match = pattern.search(real_line)
        assert match is not None
        assert match.group(1) == trace_id

    def test_ignores_an_all_zero_trace_id(self, pattern, real_line):
        """An all-zero id (an invalid span context) never becomes a trace link."""
        zeroed = real_line.replace(json.loads(real_line)["trace_id"], "0" * 32)
        assert pattern.search(zeroed) is None

    def test_ignores_span_ids_and_short_ids(self, pattern):
        """Only the trace_id field with 32 hex digits matches, not span_id or a truncated id."""
        assert pattern.search('{"span_id":"00f067aa0ba902b7"}') is None
        assert pattern.search('{"trace_id":"4bf92f3577b34da6"}') is None
        assert pattern.search('{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}') is not None


class TestBackends:
    def test_loki_single_binary_config(self, compose):
        """Loki 3.x: no auth, port 3100, TSDB schema v13 on the filesystem, retention with a delete store."""
        config = load(DEPLOY / "loki" / "loki.yml")
        assert config["auth_enabled"] is False
        assert config["server"]["http_listen_port"] == 3100
        assert config["common"]["replication_factor"] == 1
        assert config["common"]["ring"]["kvstore"]["store"] == "inmemory"
        assert "filesystem" in config["common"]["storage"]
        (schema,) = config["schema_config"]["configs"]
        assert (schema["store"], schema["schema"], schema["object_store"]) == ("tsdb", "v13", "filesystem")
        # Loki 3 refuses retention without a delete-request store; these 2.x sections no longer exist.
        assert config["compactor"]["retention_enabled"] is True
        assert config["compactor"]["delete_request_store"] == "filesystem"
        assert not {"table_manager", "chunk_store_config", "storage_config"} & set(config)
        command = compose["services"]["loki"]["command"]
        assert command == ["-config.file=/etc/loki/loki.yml"]

    def test_tempo_3_monolithic_config(self, compose):
        """Tempo 3: OTLP gRPC 4317 and HTTP 4318, API 3200, live-store and backend worker, no 2.x blocks."""
        config = load(DEPLOY / "tempo" / "tempo.yml")
        assert config["target"] == "all"
        assert not {"ingester", "ingester_client", "compactor", "metrics_generator_client"} & set(config)
        assert config["server"]["http_listen_port"] == 3200
        protocols = config["distributor"]["receivers"]["otlp"]["protocols"]
        assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
        assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
        assert "live_store" in config
        grpc = config["server"]["grpc_listen_port"]
        assert config["backend_worker"]["backend_scheduler_addr"] == f"127.0.0.1:{grpc}"
        assert config["querier"]["frontend_worker"]["frontend_address"] == f"127.0.0.1:{grpc}"
        assert config["storage"]["trace"]["backend"] == "local"
        assert config["backend_worker"]["compaction"]["block_retention"] == "168h"
        (remote,) = config["metrics_generator"]["storage"]["remote_write"]
        assert remote["url"] == "http://prometheus:9090/api/v1/write"
        assert mounts(compose["services"]["tempo"])["/var/tempo"] == ("tempo-data", False)


SERVICE_DOCKERFILE = ROOT / "services" / "Dockerfile"


def dockerfile_stages(path: Path) -> dict[str, str]:
    """Stage name (or the image, for unnamed stages) → that stage's text, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    stages: dict[str, str] = {}
    for match in re.finditer(
        r"^FROM (\S+)(?: AS (\S+))?\n(.*?)(?=^FROM |\Z)", text, re.MULTILINE | re.DOTALL
    ):
        stages[match[2] or match[1]] = match[3]
    return stages


class TestImages:
    def test_one_build_definition_serves_the_three_services(self, compose):
        """services/Dockerfile is the only one; compose builds each service from it with SERVICE=<name>."""
        assert sorted(path.relative_to(ROOT).as_posix() for path in ROOT.glob("services/**/Dockerfile")) == [
            "services/Dockerfile"
        ]
        for service in SERVICES:
            build = compose["services"][service]["build"]
            assert Path(build["dockerfile"]).name == "Dockerfile"
            assert (Path(build["context"]) / build["dockerfile"]).resolve() == SERVICE_DOCKERFILE
            assert build["args"] == {"SERVICE": service}

    def test_the_build_stage_installs_only_the_named_package(self):
        """One uv build stage, parameterised by SERVICE: gatewayz-$SERVICE and its sources alone."""
        text = SERVICE_DOCKERFILE.read_text()
        build = dockerfile_stages(SERVICE_DOCKERFILE)["build"]
        assert "uv sync --frozen --no-dev --package gatewayz-${SERVICE} --no-editable" in build
        assert "COPY services/${SERVICE}/ services/${SERVICE}/" in build
        assert not re.search(r"COPY services/(gateway|admin|log-shipper)/ ", text)
        bases = re.findall(r"^FROM (\S+:\S+)", text, re.MULTILINE) + re.findall(
            r"COPY --from=(\S+:\S+) ", text
        )
        for image in bases:
            # Every base image pinned to a patch release, not a moving tag.
            assert re.search(r":v?\d+\.\d+\.\d+", image), image
        # The final image is the stage SERVICE names; on Railway, SERVICE defaults to the service's name.
        assert text.rstrip().endswith("FROM ${SERVICE}")
        assert "ARG SERVICE=${RAILWAY_SERVICE_NAME}" in text

    @pytest.mark.parametrize("service", sorted(SERVICES))
    def test_each_service_stage_runs_its_module_as_non_root(self, service):
        """A final stage per service: non-root, its port, its module, the probe its railway.json checks."""
        stage = dockerfile_stages(SERVICE_DOCKERFILE)[service]
        assert "USER app" in stage
        assert f'CMD ["python", "-m", "{MODULES[service]}"]' in stage
        assert f"EXPOSE {SERVICES[service]}" in stage
        assert f"PORT={SERVICES[service]}" in stage
        health = re.search(r"HEALTH_PATH=(\S+)", stage)[1]
        assert (
            health
            == json.loads((ROOT / "services" / service / "railway.json").read_text())["deploy"][
                "healthcheckPath"
            ]
        )
        assert "HEALTHCHECK" in dockerfile_stages(SERVICE_DOCKERFILE)["runtime"]
        assert "FROM runtime AS " + service in SERVICE_DOCKERFILE.read_text()

    def test_dockerfile_copies_every_workspace_member_manifest(self):
        """uv reads the lock against the whole workspace, so each member's pyproject.toml is in the image."""
        text = SERVICE_DOCKERFILE.read_text()
        root = tomllib.loads((ROOT / "pyproject.toml").read_text())
        members = [
            path.relative_to(ROOT).as_posix()
            for pattern in root["tool"]["uv"]["workspace"]["members"]
            for path in sorted(ROOT.glob(pattern))
            if (path / "pyproject.toml").is_file()
        ]
        assert "COPY pyproject.toml uv.lock ./" in text
        for member in members:
            assert f"COPY {member}/pyproject.toml {member}/" in text, member

    @pytest.mark.parametrize("service", sorted(SERVICES))
    def test_railway_json_builds_the_dockerfile_and_checks_health(self, service):
        """railway.json names the shared Dockerfile and a probe every service serves."""
        config = json.loads((ROOT / "services" / service / "railway.json").read_text())
        assert config["build"]["dockerfilePath"] == "services/Dockerfile"
        assert "services/Dockerfile" in config["build"]["watchPatterns"]
        assert config["deploy"]["healthcheckPath"] in {"/health", "/ready"}
        assert config["deploy"]["startCommand"] == f"python -m {MODULES[service]}"

    def test_dockerignore_keeps_secrets_and_caches_out(self):
        """The build context excludes .env, .git and virtualenvs."""
        ignored = (ROOT / ".dockerignore").read_text().split()
        assert {".env", ".git", ".venv"} <= set(ignored)


def run_build_stage(dockerfile: Path, context: Path, workdir: Path, build_args: dict[str, str]) -> Path:
    """Replay a Dockerfile's build stage without Docker: its COPYs into `workdir`, its RUNs there.

    Only the instructions our Dockerfiles use are understood (ARG, ENV, WORKDIR, COPY from the context, RUN),
    `${NAME}` standing for a build argument; the virtualenv lands in `workdir/venv` instead of /app/.venv.
    Returns the virtualenv.
    """
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    stages = re.split(r"^FROM .*$", text, flags=re.MULTILINE)
    venv = workdir / "venv"
    # `uv run` names its own binary in $UV, which may be outside PATH (ensure-uv.sh installs to ~/.local).
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv not found"
    path = f"{Path(uv).parent}{os.pathsep}{os.environ['PATH']}"
    env = {"PATH": path, "HOME": os.environ.get("HOME", str(workdir)), "UV_PYTHON": "3.11"}
    arguments = dict(build_args)
    cwd = workdir / "src"

    def substitute(value: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: arguments[m[1]], value)

    for line in stages[1].splitlines():
        instruction, _, args = line.strip().partition(" ")
        args = substitute(args)
        if instruction == "ARG":
            assert args.split("=")[0] in arguments, f"build argument {args} not given"
        elif instruction == "ENV":
            env.update(dict(pair.split("=", 1) for pair in args.split()))
        elif instruction == "WORKDIR":
            cwd = workdir / args.lstrip("/")
            cwd.mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY" and not args.startswith("--from"):
            *sources, dest = args.split()
            target = cwd / dest
            for source in sources:
                if (context / source).is_dir():
                    skip = shutil.ignore_patterns("__pycache__")
                    shutil.copytree(context / source, target, dirs_exist_ok=True, ignore=skip)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(context / source, target)
        elif instruction == "RUN":
            # Where the image keeps the venv and skips the cache, the test uses its own venv and uv's cache.
            env.update(UV_PROJECT_ENVIRONMENT=str(venv), UV_NO_CACHE="0", UV_COMPILE_BYTECODE="0")
            result = subprocess.run(
                ["bash", "-c", args],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert result.returncode == 0, f"RUN {args}: {result.stderr}"
    return venv


class TestImageBuildSteps:
    @pytest.mark.parametrize("service", sorted(SERVICES))
    def test_build_stage_yields_a_venv_that_runs_the_service_alone(self, service, tmp_path):
        """The build stage gives a venv of this service and telemetry alone, runnable without sources."""
        venv = run_build_stage(SERVICE_DOCKERFILE, ROOT, tmp_path, {"SERVICE": service})
        site = next((venv / "lib").glob("python3.*/site-packages"))
        packages = {path.name for path in site.iterdir()}
        assert {MODULES[service], "telemetry"} <= packages
        assert not {MODULES[other] for other in set(SERVICES) - {service}} & packages
        assert not {"pytest", "ruff", "mypy"} & packages
        shutil.rmtree(tmp_path / "src")  # the runtime image holds the venv only
        port = free_port()
        env = {
            "PATH": str(venv / "bin"),
            "HOME": str(tmp_path),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "TEMPO_ENABLED": "false",
            "GATEWAY_DB_PATH": str(tmp_path / "gateway.db"),
            "SHIPPER_SPOOL_DIR": str(tmp_path / "spool"),
            "LOKI_PUSH_URL": f"http://127.0.0.1:{free_port()}/loki/api/v1/push",
            "ADMIN_API_KEY": "gw_admin_image_test_key",
        }
        log = (tmp_path / "service.log").open("wb")
        process = subprocess.Popen(
            [str(venv / "bin" / "python"), "-m", MODULES[service]],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 30
            healthy = False
            while time.monotonic() < deadline and not healthy and process.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    healthy = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
                time.sleep(0.2)
            assert healthy, (tmp_path / "service.log").read_text()[-2000:]
        finally:
            process.terminate()
            process.wait(10)


class TestReadme:
    def test_deploy_and_railway_sections(self):
        """README explains the compose stack and Railway: login, links, logs, private DNS and replicas."""
        text = (ROOT / "README.md").read_text()
        deploy = text.split("## Deploy", 1)[1].split("\n## ", 1)[0]
        railway = text.split("## Railway", 1)[1].split("\n## ", 1)[0]
        for needle in (
            "docker compose up",
            "GRAFANA_ADMIN_PASSWORD",
            "exemplar",
            "derived field",
            "json-file",
        ):
            assert needle in deploy, needle
        for needle in (
            "railway.internal",
            "dns_sd_configs",
            "/ingest",
            "replica",
            "LOG_FORWARD_URL",
            "RAILWAY_RUN_UID",
        ):
            assert needle in railway, needle


REPLICAS, REQUESTS_PER_SECOND = 3, 2000
"""The rate the shipped Loki and Tempo limits are sized for (README, "Sizing")."""
RATE = REPLICAS * REQUESTS_PER_SECOND
HEADROOM = 2
MB = 1 << 20  # Loki's `_mb` settings are mebibytes


def _seconds(text: str) -> float:
    return float(text.removesuffix("s"))


def _loki_bytes(text: str) -> int:
    """Loki's ByteSize strings (`10MB`, `3MiB`) as bytes, as its flag parser reads them (SI for MB)."""
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    match = re.fullmatch(r"(\d+)\s*([KMG]I?B)", str(text).upper())
    assert match, text
    return int(match[1]) * units[match[2]]


def _gateway_lines() -> tuple[bytes, bytes]:
    """A chat completion's access line and inference line, written by the real JSON sink."""
    from telemetry.logs import JsonSink  # noqa: PLC0415 - only this test needs the sink

    stream = io.BytesIO()
    sink = JsonSink("gatewayz-api", stream, "INFO")
    ids = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    access = {
        "endpoint": "/v1/chat/completions",
        "method": "POST",
        "status_code": 200,
        "duration_ms": 129.417,
    }
    sink.write_event("INFO", "Request completed", access, *ids)
    inference = {
        "provider": "openai",
        "model": "gpt-4o-mini-2024-07-18",
        "status": "success",
        "prompt_tokens": 1234,
        "completion_tokens": 567,
        "credits": 0.001234,
        "cache_hit": False,
        "stream": True,
        "attempts": 1,
        "user_id": 123456,
        "duration_ms": 1234.567,
        "key_alias": "production-backend",
    }
    sink.write_event("INFO", "Inference completed", inference, *ids)
    first, second = stream.getvalue().splitlines()
    return first, second


def _gateway_trace_bytes() -> int:
    """OTLP bytes of one chat completion's spans (server + provider), encoded as the exporter sends them."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )
    from opentelemetry.trace import SpanKind  # noqa: PLC0415

    from telemetry.otlp import encode_export_request  # noqa: PLC0415
    from telemetry.settings import TelemetrySettings  # noqa: PLC0415
    from telemetry.tracing import create_tracer_provider  # noqa: PLC0415

    exporter = InMemorySpanExporter()
    provider = create_tracer_provider(
        TelemetrySettings(service_name="gatewayz-api", port=8000, tempo_enabled=False), exporter
    )
    tracer = provider.get_tracer("gateway")
    server = tracer.start_span("POST /v1/chat/completions", kind=SpanKind.SERVER)
    for name, value in {
        "http.request.method": "POST",
        "http.route": "/v1/chat/completions",
        "http.response.status_code": 200,
        "url.path": "/v1/chat/completions",
        "url.scheme": "http",
        "server.address": "gateway",
        "client.address": "10.0.0.12",
        "user_agent.original": "OpenAI/Python 1.54.0",
    }.items():
        server.set_attribute(name, value)
    child = tracer.start_span("chat gpt-4o-mini", kind=SpanKind.CLIENT)
    for name, value in {
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": 1234,
        "gen_ai.usage.output_tokens": 567,
        "server.address": "api.openai.com",
    }.items():
        child.set_attribute(name, value)
    child.end()
    server.end()
    provider.force_flush()
    spans = exporter.get_finished_spans()
    provider.shutdown()
    return len(encode_export_request(spans))


class TestSizing:
    """The shipped limits hold the documented rate with headroom; a default that cannot is refused here."""

    def test_readme_states_the_rate_the_backends_are_sized_for(self):
        """README "Sizing" names the rate these tests check, and what to raise beyond it."""
        sizing = (ROOT / "README.md").read_text().split("### Sizing", 1)[1].split("\n## ", 1)[0]
        assert f"{REPLICAS} gateway replicas \u00d7 {REQUESTS_PER_SECOND:,} requests/s" in sizing
        for needle in (
            "max_traces_per_user",
            "ingestion_rate_mb",
            "OTEL_TRACES_SAMPLER_ARG",
            "Pipeline health",
        ):
            assert needle in sizing, needle

    def test_tempo_live_traces_hold_every_request_as_its_own_trace(self):
        """Each request is a trace, live until idle for max_trace_idle and cut at the next flush check:
        max_traces_per_user must hold rate x that time x headroom (Tempo's default, 10,000, cannot)."""
        config = load(DEPLOY / "tempo" / "tempo.yml")
        live = config["live_store"]
        lifetime = _seconds(live["max_trace_idle"]) + _seconds(live.get("flush_check_period", "10s"))
        needed = RATE * lifetime * HEADROOM
        assert needed > 10_000  # the default would drop spans (live_traces_exceeded) at this rate
        assert config["overrides"]["defaults"]["ingestion"]["max_traces_per_user"] >= needed

    def test_tempo_byte_rate_holds_the_spans(self):
        """rate_limit_bytes holds rate x our spans' OTLP bytes x headroom; the burst at least that."""
        ingestion = load(DEPLOY / "tempo" / "tempo.yml")["overrides"]["defaults"]["ingestion"]
        per_request = _gateway_trace_bytes()
        assert 300 < per_request < 3000, per_request
        needed = RATE * per_request * HEADROOM
        assert ingestion["rate_limit_bytes"] >= needed
        assert ingestion["burst_size_bytes"] >= ingestion["rate_limit_bytes"]

    def test_loki_rate_holds_the_access_and_inference_lines(self):
        """ingestion_rate_mb holds rate x (access + inference line) x headroom (Loki's 4 MB cannot)."""
        limits = load(DEPLOY / "loki" / "loki.yml")["limits_config"]
        access, inference = _gateway_lines()
        per_request = len(access) + len(inference)
        needed = RATE * per_request * HEADROOM
        assert needed > 4 * MB  # the default would answer 429 (rate_limited) at this rate
        assert limits["ingestion_rate_mb"] * MB >= needed
        # The burst takes a shipper catching up (several 1 MiB pushes back to back) above the rate.
        assert limits["ingestion_burst_size_mb"] >= 2 * limits["ingestion_rate_mb"]

    def test_loki_one_busy_stream_is_not_rate_limited(self):
        """Nearly every line is in one stream (service, level, environment): per_stream_rate_limit holds
        the whole rate, and automatic sharding splits it below that limit."""
        limits = load(DEPLOY / "loki" / "loki.yml")["limits_config"]
        access, inference = _gateway_lines()
        stream_rate = RATE * (len(access) + len(inference))
        assert _loki_bytes(limits["per_stream_rate_limit"]) >= stream_rate * HEADROOM
        assert _loki_bytes(limits["per_stream_rate_limit_burst"]) >= _loki_bytes(
            limits["per_stream_rate_limit"]
        )
        assert limits["shard_streams"]["enabled"] is True
        assert _loki_bytes(limits["shard_streams"]["desired_rate"]) < _loki_bytes(
            limits["per_stream_rate_limit"]
        )
