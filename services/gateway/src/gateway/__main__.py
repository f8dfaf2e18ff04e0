"""`python -m gateway`: serve the gateway on HOST/PORT."""

from __future__ import annotations

from functools import partial

from gateway.app import create_app
from gateway.settings import GatewaySettings
from telemetry import load_settings_or_exit, serve


def main() -> None:
    """Load settings (exit 2 naming a bad variable) and serve."""
    settings = load_settings_or_exit(GatewaySettings)
    serve(partial(create_app, settings), settings)


if __name__ == "__main__":
    main()
