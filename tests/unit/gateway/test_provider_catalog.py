"""The provider catalog file: the shipped default, and errors that name the file and the field."""

from __future__ import annotations

import msgspec
import pytest

from gateway.app import create_app
from gateway.providers.catalog import CatalogError, load_catalog


def write(tmp_path, text: str) -> str:
    path = tmp_path / "providers.toml"
    path.write_text(text)
    return str(path)


class TestShippedDefault:
    def test_local_only_with_fast_slow_and_flaky_models(self):
        """The default needs no network: local providers only, a fast, a slow and an erroring model."""
        catalog = load_catalog()
        assert {provider.kind for provider in catalog.providers} == {"local"}
        models = {route.model.id: route.model for routes in catalog.routes.values() for route in routes}
        assert models["gatewayz-fast"].latency_ms < 100
        assert models["gatewayz-slow"].latency_ms >= 1000
        assert models["gatewayz-flaky"].error_rate > 0
        assert len(catalog.routes_for("gatewayz-flaky")) == 2


class TestErrors:
    def test_missing_file_names_the_variable(self, tmp_path):
        """A path that does not exist names GATEWAY_PROVIDERS_FILE."""
        with pytest.raises(CatalogError, match="GATEWAY_PROVIDERS_FILE"):
            load_catalog(str(tmp_path / "absent.toml"))

    def test_bad_field_is_named(self, tmp_path):
        """A negative price names the field's path in the file."""
        path = write(
            tmp_path,
            '[[providers]]\nname = "p"\nkind = "local"\n'
            '[[providers.models]]\nid = "m"\nprompt_price = -1\ncompletion_price = 0\n',
        )
        with pytest.raises(CatalogError, match=r"providers\[0\]\.models\[0\]\.prompt_price"):
            load_catalog(path)

    def test_unknown_kind(self, tmp_path):
        """A kind other than local/openai is refused, naming `kind`."""
        path = write(
            tmp_path,
            '[[providers]]\nname = "p"\nkind = "magic"\n[[providers.models]]\nid = "m"\nprompt_price = 0\n'
            "completion_price = 0\n",
        )
        with pytest.raises(CatalogError, match="kind"):
            load_catalog(path)

    def test_openai_needs_a_base_url(self, tmp_path):
        """An `openai` provider without base_url is refused."""
        path = write(
            tmp_path,
            '[[providers]]\nname = "p"\nkind = "openai"\n[[providers.models]]\nid = "m"\nprompt_price = 0\n'
            "completion_price = 0\n",
        )
        with pytest.raises(CatalogError, match="base_url"):
            load_catalog(path)

    def test_duplicate_provider(self, tmp_path):
        """Two providers with one name are refused."""
        provider = (
            '[[providers]]\nname = "p"\nkind = "local"\n'
            '[[providers.models]]\nid = "m"\nprompt_price = 0\ncompletion_price = 0\n'
        )
        with pytest.raises(CatalogError, match="duplicate"):
            load_catalog(write(tmp_path, provider * 2))

    def test_bad_catalog_stops_startup(self, tmp_path, gateway_settings, gateway_telemetry, capsys):
        """create_app exits 2 with one line naming the problem."""
        settings = msgspec.structs.replace(
            gateway_settings, gateway_providers_file=str(tmp_path / "absent.toml")
        )
        with pytest.raises(SystemExit) as exit_info:
            create_app(settings, gateway_telemetry)
        assert exit_info.value.code == 2
        assert "configuration error: GATEWAY_PROVIDERS_FILE=" in capsys.readouterr().err
