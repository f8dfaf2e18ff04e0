"""The provider/model catalog: a TOML file naming providers, their models and per-token prices."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from gateway.schema import describe_validation_error

ProviderKind = Literal["local", "openai"]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/@+-]+$")]
Price = Annotated[float, msgspec.Meta(ge=0)]
DEFAULT_CATALOG = "default_catalog.toml"
"""The shipped catalog, beside this module: the embedded local provider only."""


class ModelConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One model a provider serves."""

    id: Name
    """The model id clients send."""
    prompt_price: Price
    """Credits per prompt token."""
    completion_price: Price
    """Credits per completion token."""
    upstream_model: str | None = None
    """The model name the upstream knows it by (`openai` kind); defaults to `id`."""
    max_output_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024
    """Completion limit applied (and reserved against the balance) when the request sets none."""
    latency_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """`local` kind: simulated time to complete."""
    error_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    """`local` kind: share of calls that fail like an upstream 503."""

    @property
    def upstream_name(self) -> str:
        """The name sent upstream."""
        return self.upstream_model or self.id


class ProviderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One provider: how to reach it and what it serves."""

    name: Name
    """The `provider` label value and the name in logs and spans."""
    kind: ProviderKind
    """`local` (embedded, no network) or `openai` (any OpenAI-compatible HTTP upstream)."""
    models: Annotated[list[ModelConfig], msgspec.Meta(min_length=1)]
    """What it serves."""
    base_url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/]+")] | None = None
    """`openai` kind: the API base, e.g. `https://api.openai.com/v1`."""
    api_key_env: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    """The *name* of the environment variable holding the upstream key (never the key itself)."""
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=600)] = 60.0
    """Bound on one call (non-streaming: the whole call; streaming: until the first event)."""


class CatalogFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The file's top level."""

    providers: Annotated[list[ProviderConfig], msgspec.Meta(min_length=1)]


class CatalogError(ValueError):
    """The catalog file cannot be used; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Route:
    """One way to serve a model: a provider and that provider's entry for the model."""

    provider: ProviderConfig
    model: ModelConfig


@dataclass(frozen=True, slots=True)
class Catalog:
    """Providers by name and, for each model id, the providers serving it in catalog order."""

    providers: tuple[ProviderConfig, ...]
    routes: dict[str, tuple[Route, ...]]

    @classmethod
    def from_file(cls, file: CatalogFile) -> Catalog:
        """Index a decoded file, rejecting duplicate names and misconfigured providers."""
        names: set[str] = set()
        routes: dict[str, list[Route]] = {}
        for provider in file.providers:
            if provider.name in names:
                raise CatalogError(f"providers: duplicate provider name {provider.name!r}")
            names.add(provider.name)
            if provider.kind == "openai" and provider.base_url is None:
                raise CatalogError(f"providers.{provider.name}.base_url: required for kind 'openai'")
            seen: set[str] = set()
            for model in provider.models:
                if model.id in seen:
                    raise CatalogError(f"providers.{provider.name}.models: duplicate model {model.id!r}")
                seen.add(model.id)
                routes.setdefault(model.id, []).append(Route(provider, model))
        return cls(tuple(file.providers), {model: tuple(found) for model, found in routes.items()})

    def routes_for(self, model: str) -> tuple[Route, ...]:
        """The routes serving `model`, empty when the catalog has none."""
        return self.routes.get(model, ())


def load_catalog(path: str | None = None) -> Catalog:
    """The catalog at `path`, or the shipped default; `CatalogError` names what is wrong."""
    if path is None:
        source = "<shipped default>"
        data = resources.files("gateway.providers").joinpath(DEFAULT_CATALOG).read_bytes()
    else:
        source = path
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CatalogError(f"GATEWAY_PROVIDERS_FILE={path!r}: {exc.strerror}") from None
    try:
        return Catalog.from_file(msgspec.toml.decode(data, type=CatalogFile))
    except msgspec.MsgspecError as exc:
        raise CatalogError(f"{source}: {describe_validation_error(exc)}") from None
    except CatalogError as exc:
        raise CatalogError(f"{source}: {exc}") from None
