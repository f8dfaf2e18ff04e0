"""Railway's deploy files: one railway.json per component, backend images as compose's, Grafana's shared
provisioning expanded as Grafana would with compose's values and with the README's Railway variables."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from support.grafana_env import expand, referenced
from support.railway import readme_variables, resolve

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
COMPONENTS = {
    "gateway": ROOT / "services" / "gateway" / "railway.json",
    "admin": ROOT / "services" / "admin" / "railway.json",
    "log-shipper": ROOT / "services" / "log-shipper" / "railway.json",
    "prometheus": DEPLOY / "prometheus" / "railway" / "railway.json",
    "loki": DEPLOY / "loki" / "railway" / "railway.json",
    "tempo": DEPLOY / "tempo" / "railway" / "railway.json",
    "grafana": DEPLOY / "grafana" / "railway" / "railway.json",
}
BACKENDS = ("prometheus", "loki", "tempo", "grafana")
HEALTH_PATHS = {
    "gateway": "/ready",
    "admin": "/health",
    "log-shipper": "/health",
    "prometheus": "/-/ready",
    "loki": "/ready",
    "tempo": "/ready",
    "grafana": "/api/health",
}
PORTS = {"prometheus": 9090, "loki": 3100, "tempo": 3200, "grafana": 3000}
# The keys Railway's config-as-code reference documents (docs.railway.com/config-as-code/reference).
BUILD_KEYS = {"builder", "dockerfilePath", "watchPatterns", "buildCommand", "railpackVersion"}
DEPLOY_KEYS = {
    "startCommand",
    "preDeployCommand",
    "numReplicas",
    "multiRegionConfig",
    "healthcheckPath",
    "healthcheckTimeout",
    "restartPolicyType",
    "restartPolicyMaxRetries",
    "cronSchedule",
    "sleepApplication",
    "region",
    "overlapSeconds",
    "drainingSeconds",
}
GO_BOOLS = {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}
"""What Go's strconv.ParseBool accepts (Grafana's `basicAuth` is parsed so after expansion)."""

pytestmark = pytest.mark.integration


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    return [
        (line.split(" ", 1)[0], line.split(" ", 1)[1] if " " in line else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


def final_image(dockerfile: Path) -> str:
    return [args for name, args in instructions(dockerfile) if name == "FROM"][-1].split()[0]


def image_env(dockerfile: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, args in instructions(dockerfile):
        if name == "ENV":
            env.update(dict(pair.split("=", 1) for pair in args.split()))
    return env


@pytest.fixture(scope="module")
def compose() -> dict:
    result = subprocess.run(
        ["docker-compose", "--env-file", ".env.example", "-f", "docker-compose.yml", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"]},
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


class TestRailwayJson:
    def test_every_component_has_one(self):
        """The three services and the four backends each deploy from a config file in the repository."""
        assert all(path.is_file() for path in COMPONENTS.values())
        found = {path.relative_to(ROOT) for path in ROOT.glob("**/railway.json") if ".venv" not in path.parts}
        assert found == {path.relative_to(ROOT) for path in COMPONENTS.values()}

    @pytest.mark.parametrize("component", sorted(COMPONENTS))
    def test_documented_keys_a_dockerfile_a_health_check_and_a_restart_policy(self, component):
        """Valid JSON, only keys Railway documents, a Dockerfile that exists, the component's probe."""
        config = json.loads(COMPONENTS[component].read_text())
        assert config["$schema"] == "https://railway.com/railway.schema.json"
        assert set(config) <= {"$schema", "build", "deploy"}
        assert set(config["build"]) <= BUILD_KEYS
        assert set(config["deploy"]) <= DEPLOY_KEYS
        assert config["build"]["builder"] == "DOCKERFILE"
        assert (ROOT / config["build"]["dockerfilePath"]).is_file()
        assert config["deploy"]["healthcheckPath"] == HEALTH_PATHS[component]
        assert isinstance(config["deploy"]["healthcheckTimeout"], int)
        assert config["deploy"]["restartPolicyType"] in {"ON_FAILURE", "ALWAYS", "NEVER"}
        dockerfile_dir = Path(config["build"]["dockerfilePath"]).parent.as_posix()
        patterns = config["build"]["watchPatterns"]
        assert any(
            pattern == config["build"]["dockerfilePath"] or dockerfile_dir.startswith(pattern.rstrip("*/"))
            for pattern in patterns
        ), patterns


class TestBackendImages:
    @pytest.mark.parametrize("backend", BACKENDS)
    def test_same_image_as_compose_and_every_copy_source_exists(self, backend, compose):
        """The image tag equals compose's; each COPY from the build context names a file or folder we ship."""
        dockerfile = DEPLOY / backend / "railway" / "Dockerfile"
        assert final_image(dockerfile) == compose["services"][backend]["image"]
        for name, args in instructions(dockerfile):
            if name == "FROM":
                assert re.search(r":v?\d+\.\d+\.\d+", args.split()[0]), args
            if name == "COPY" and not args.startswith("--from"):
                *sources, _ = args.split()
                for source in sources:
                    assert (ROOT / source).exists(), source

    @pytest.mark.parametrize("backend", ["loki", "tempo"])
    def test_runs_with_compose_command_on_the_copied_config(self, backend, compose):
        """`-config.file` as in compose, pointing at where the config from deploy/ was copied."""
        dockerfile = DEPLOY / backend / "railway" / "Dockerfile"
        (command,) = [json.loads(args) for name, args in instructions(dockerfile) if name == "CMD"]
        assert command == compose["services"][backend]["command"]
        copies = [args.split() for name, args in instructions(dockerfile) if name == "COPY"]
        config_path = command[0].split("=", 1)[1]
        assert any(copy[-1] == config_path for copy in copies)

    def test_loki_config_is_composes_own_file(self, compose):
        """Loki's Railway image carries deploy/loki/loki.yml itself, where compose mounts it."""
        (copy,) = [
            args for name, args in instructions(DEPLOY / "loki" / "railway" / "Dockerfile") if name == "COPY"
        ]
        source, dest = copy.split()
        assert source == "deploy/loki/loki.yml"
        assert f"./{source}:{dest}:ro" in compose["services"]["loki"]["volumes"] or any(
            volume.endswith(f"{source}:{dest}:ro") for volume in compose["services"]["loki"]["volumes"]
        )

    def test_tempo_rewrites_the_prometheus_url_and_the_receivers_addresses_only(self, tmp_path):
        """The build's RUN, run here on a copy of tempo.yml (GNU sed and grep, as in the build stage): the
        remote-write URL names Prometheus on Railway, the OTLP receivers listen on `[::]` (IPv6-only private
        networks), nothing else changes; and the greps fail the build when a rewritten line is missing."""
        dockerfile = DEPLOY / "tempo" / "railway" / "Dockerfile"
        (run,) = [args for name, args in instructions(dockerfile) if name == "RUN"]
        original = (DEPLOY / "tempo" / "tempo.yml").read_text()
        copy = tmp_path / "tempo.yml"

        def build(text: str) -> int:
            copy.write_text(text)
            script = run.replace("/tempo.yml", str(copy))
            return subprocess.run(["bash", "-c", script], check=False).returncode

        assert build(original) == 0
        rewritten = copy.read_text()
        changed = [
            (a, b) for a, b in zip(original.splitlines(), rewritten.splitlines(), strict=True) if a != b
        ]
        assert len(changed) == 3, changed
        config = yaml.safe_load(rewritten)
        (remote,) = config["metrics_generator"]["storage"]["remote_write"]
        assert remote["url"] == "http://prometheus.railway.internal:9090/api/v1/write"
        protocols = config["distributor"]["receivers"]["otlp"]["protocols"]
        assert (protocols["grpc"]["endpoint"], protocols["http"]["endpoint"]) == ("[::]:4317", "[::]:4318")
        expected = yaml.safe_load(original)
        expected["metrics_generator"]["storage"]["remote_write"][0]["url"] = remote["url"]
        expected["distributor"]["receivers"]["otlp"]["protocols"] = protocols
        assert config == expected
        # A tempo.yml whose receiver line changed makes the build fail rather than ship IPv4-only receivers.
        assert build(original.replace('endpoint: "0.0.0.0:4318"', 'endpoint: "0.0.0.0:14318"')) != 0

    def test_grafana_copies_provisioning_and_the_dashboards_where_the_provider_reads(self, compose):
        """Provisioning where Grafana looks for it, dashboards where the provider (and compose) put them."""
        dockerfile = DEPLOY / "grafana" / "railway" / "Dockerfile"
        copies = dict(args.split() for name, args in instructions(dockerfile) if name == "COPY")
        assert copies["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
        (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text())[
            "providers"
        ]
        assert copies["deploy/grafana/dashboards"] == provider["options"]["path"]
        assert any(
            volume.endswith(f":{provider['options']['path']}:ro")
            for volume in compose["services"]["grafana"]["volumes"]
        )
        home = image_env(dockerfile)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        assert (
            home == compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        )
        assert (DEPLOY / "grafana" / "dashboards" / Path(home).name).is_file()

    def test_grafana_refuses_to_start_without_an_admin_password(self, tmp_path):
        """Its entrypoint exits 2 naming GF_SECURITY_ADMIN_PASSWORD when unset, else runs Grafana's run.sh."""
        dockerfile = DEPLOY / "grafana" / "railway" / "Dockerfile"
        (entrypoint,) = [json.loads(args) for name, args in instructions(dockerfile) if name == "ENTRYPOINT"]
        stub = tmp_path / "run.sh"
        stub.write_text('#!/bin/sh\necho "grafana started $*"\n')
        stub.chmod(0o755)
        command = [part.replace("/run.sh", str(stub)) for part in entrypoint]
        refused = subprocess.run(
            command, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, check=False
        )
        assert refused.returncode == 2
        assert "GF_SECURITY_ADMIN_PASSWORD" in refused.stderr
        env = {"PATH": "/usr/bin:/bin", "GF_SECURITY_ADMIN_PASSWORD": "a-chosen-one"}
        ran = subprocess.run([*command, "web"], capture_output=True, text=True, env=env, check=False)
        assert (ran.returncode, ran.stdout.strip()) == (0, "grafana started web")


def provisioning_files() -> list[Path]:
    return sorted(PROVISIONING.glob("*/*.yml"))


def check_datasources(expanded: dict, hosts: dict[str, str]) -> None:
    """Every datasource URL is http://<expected host>:<port>, basicAuth parses as Go's bool."""
    for source in expanded["datasources"]:
        url = urlsplit(source["url"])
        assert url.scheme == "http", source["url"]
        assert url.hostname == hosts[source["uid"]], source["url"]
        assert url.port == {"prometheus": 9090, "loki": 3100, "tempo": 3200}[source["uid"]]
        assert source["basicAuth"] in GO_BOOLS, source["basicAuth"]


class TestGrafanaProvisioning:
    def test_only_the_syntax_grafana_expands(self):
        """`$NAME` / `${NAME}` only: Grafana's os.ExpandEnv would turn `${NAME:-default}` into nothing."""
        shell_default = re.compile(r"(?<!\$)\$\{[A-Za-z_][A-Za-z0-9_]*:[-=?+]")
        for path in provisioning_files():
            for name in referenced(yaml.safe_load(path.read_text())):
                assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), (path, name)
            values = json.dumps(yaml.safe_load(path.read_text()))  # values only, not the comments
            assert not shell_default.search(values), path

    def test_compose_sets_every_variable_and_they_expand_to_the_compose_names(self, compose):
        """With compose's Grafana environment every reference is set and the URLs are the compose names."""
        env = compose["services"]["grafana"]["environment"]
        datasources = yaml.safe_load((PROVISIONING / "datasources" / "datasources.yml").read_text())
        assert referenced(datasources) - {"PROMETHEUS_USERNAME", "PROMETHEUS_PASSWORD", "LOKI_USERNAME"} - {
            "LOKI_PASSWORD",
            "TEMPO_USERNAME",
            "TEMPO_PASSWORD",
        } <= set(env)
        check_datasources(
            expand(datasources, env), {"prometheus": "prometheus", "loki": "loki", "tempo": "tempo"}
        )

    def test_railway_values_expand_to_the_private_names(self):
        """The Railway image's defaults, then the README's Grafana variables as Railway resolves them."""
        datasources = yaml.safe_load((PROVISIONING / "datasources" / "datasources.yml").read_text())
        image = image_env(DEPLOY / "grafana" / "railway" / "Dockerfile")
        railway = {name: f"{name}.railway.internal" for name in ("prometheus", "loki", "tempo")}
        check_datasources(expand(datasources, image), railway)
        from_readme = {**image, **resolve(readme_variables())["grafana"]}
        check_datasources(expand(datasources, from_readme), railway)
        assert referenced(datasources) <= set(image) | {
            f"{name}_{part}" for name in ("PROMETHEUS", "LOKI", "TEMPO") for part in ("USERNAME", "PASSWORD")
        }

    def test_literal_dollars_survive_expansion(self, compose):
        """`$$` stays a `$` for Grafana's own variables: trace links, the tags placeholder."""
        env = compose["services"]["grafana"]["environment"]
        expanded = expand(yaml.safe_load((PROVISIONING / "datasources" / "datasources.yml").read_text()), env)
        by_uid = {source["uid"]: source for source in expanded["datasources"]}
        assert by_uid["loki"]["jsonData"]["derivedFields"][0]["url"] == "${__value.raw}"
        tempo = by_uid["tempo"]["jsonData"]
        assert '"${__trace.traceId}"' in tempo["tracesToLogsV2"]["query"]
        assert all("{$__tags}" in query["query"] for query in tempo["tracesToMetrics"]["queries"])

    def test_the_dashboard_provider_needs_no_variable(self):
        """The provider's folder path is the same literal path in compose and on Railway."""
        providers = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text())
        assert referenced(providers) == set()
        assert expand(providers, {}) == providers


class TestReadmeRailwayVariables:
    def test_every_reference_resolves_and_each_component_has_its_port(self):
        """The README's blocks cover the seven components; every `${{…}}` names a variable that is set."""
        variables = readme_variables()
        assert set(variables) == set(COMPONENTS)
        resolved = resolve(variables)
        for component, port in {**PORTS, "gateway": 8000, "admin": 8001, "log-shipper": 8002}.items():
            assert resolved[component]["PORT"] == str(port), component
        for component in ("gateway", "admin", "log-shipper"):
            forward = resolved[component].get("LOG_FORWARD_URL")
            if component == "log-shipper":
                assert forward is None
                assert resolved[component]["SHIPPER_OWN_LOGS"] == "true"
            else:
                assert forward == "http://log-shipper.railway.internal:8002/ingest"

    def test_services_with_a_volume_run_as_root_on_railway(self):
        """Railway mounts volumes as root: every component that keeps state sets RAILWAY_RUN_UID=0."""
        variables = readme_variables()
        for component in ("gateway", "log-shipper", *BACKENDS):
            assert variables[component].get("RAILWAY_RUN_UID") == "0", component
        assert "RAILWAY_RUN_UID" not in variables["admin"]
