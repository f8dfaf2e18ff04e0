"""`python -m log_shipper`: serve the log-shipper on HOST/PORT."""

from __future__ import annotations

import signal
from functools import partial
from types import FrameType

from log_shipper.app import create_app
from log_shipper.settings import ShipperSettings
from telemetry import load_settings_or_exit, serve


def main() -> None:
    """Load settings (exit 2 naming a bad variable) and serve."""
    settings = load_settings_or_exit(ShipperSettings)
    # uvicorn re-raises SIGTERM once its graceful shutdown is done; a stop that flushed everything it
    # could (or the end of piped input) is a normal exit, so the re-raised signal exits with status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    serve(partial(create_app, settings), settings)


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    main()
