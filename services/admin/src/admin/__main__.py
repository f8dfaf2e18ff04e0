"""`python -m admin`: serve the admin API on HOST/PORT."""

from __future__ import annotations

from functools import partial

from admin.app import create_app
from admin.settings import AdminSettings
from telemetry import load_settings_or_exit, serve


def main() -> None:
    """Load settings (exit 2 naming a bad variable) and serve."""
    settings = load_settings_or_exit(AdminSettings)
    serve(partial(create_app, settings), settings)


if __name__ == "__main__":
    main()
