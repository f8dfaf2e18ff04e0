"""Gateway fixtures: settings on a temporary store, a test catalog, the fake upstream, an app client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from gateway_testing import ADMIN_KEY, UPSTREAM_KEY, USER_KEY
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.store import SqliteStore, StoreMetrics
from gateway.store.postgres import PostgresStore
from support.fake_upstream import FakeUpstream


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def catalog_file(tmp_path: Path, upstream: FakeUpstream) -> Path:
    path = tmp_path / "providers.toml"
    upstream_models = "\n".join(
        f'[[providers.models]]\nid = "{model}"\n'
        "prompt_price = 0.5\ncompletion_price = 0.25\nmax_output_tokens = 16\n"
        for model in (
            "up-ok",
            "up-500",
            "up-slow",
            "up-bad-json",
            "up-429",
            "up-400",
            "up-stream-break",
            "up-paced",
        )
    )
    path.write_text(
        f"""
[[providers]]
name = "upstream"
kind = "openai"
base_url = "{upstream.base_url}"
api_key_env = "FAKE_UPSTREAM_KEY"
timeout_seconds = 0.5

{upstream_models}
[[providers.models]]
id = "shared"
upstream_model = "up-500"
prompt_price = 0.5
completion_price = 0.25
max_output_tokens = 16

[[providers]]
name = "local"
kind = "local"

[[providers.models]]
id = "echo"
prompt_price = 0.5
completion_price = 0.25
max_output_tokens = 64

[[providers.models]]
id = "shared"
prompt_price = 0.5
completion_price = 0.25
max_output_tokens = 64

[[providers.models]]
id = "broken"
prompt_price = 0.5
completion_price = 0.25
max_output_tokens = 16
error_rate = 1.0
"""
    )
    return path


@pytest.fixture
def gateway_settings(tmp_path: Path) -> GatewaySettings:
    """Shadows the shared fixture: the store lives in a temporary directory, never in ./data."""
    return GatewaySettings(
        tempo_enabled=False,
        environment="test",
        gateway_db_path=str(tmp_path / "gateway.db"),
        gateway_bootstrap_api_key=USER_KEY,
        admin_api_key=ADMIN_KEY,
    )


@pytest.fixture
def test_settings(gateway_settings: GatewaySettings, catalog_file: Path) -> GatewaySettings:
    return msgspec.structs.replace(
        gateway_settings, gateway_providers_file=str(catalog_file), gateway_demo_credits=1000.0
    )


@pytest.fixture
def make_client(
    gateway_telemetry, monkeypatch
) -> Iterator[Callable[[GatewaySettings], TestClient[Litestar]]]:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    clients: list[TestClient[Litestar]] = []

    def make(settings: GatewaySettings) -> TestClient[Litestar]:
        client = TestClient(create_app(settings, gateway_telemetry))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client, test_settings) -> TestClient[Litestar]:
    """The app on the test catalog; user 1 holds 1000 credits and the key `USER_KEY`."""
    return make_client(test_settings)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path):
    """A fresh store of each engine (PostgreSQL: a new database on the session's server)."""
    metrics = StoreMetrics(CollectorRegistry(), request.param)
    if request.param == "sqlite":
        opened = SqliteStore.open(str(tmp_path / "db" / "gateway.db"), metrics)
    else:
        url = request.getfixturevalue("postgres").create_database()
        opened = await PostgresStore.open(url, metrics, wait_seconds=0)
    yield opened
    await opened.close()
