"""`python -m log_shipper`: serve the log-shipper on HOST/PORT."""

from __future__ import annotations

from functools import partial

from log_shipper.app import create_app
from log_shipper.settings import ShipperSettings
from telemetry import load_settings_or_exit, serve


def main() -> None:
    """Load settings (exit 2 naming a bad variable) and serve."""
    settings = load_settings_or_exit(ShipperSettings)
    serve(partial(create_app, settings), settings)


if __name__ == "__main__":
    main()
