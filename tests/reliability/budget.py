"""How big each reliability run is: short in CI, long with `RELIABILITY_FULL=1` (`make reliability`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

FULL = os.environ.get("RELIABILITY_FULL", "").strip().lower() in {"1", "true", "yes"}
"""The long version: a million lines, ten-minute soak, more examples and samples."""


def pick(ci: T, full: T) -> T:
    """`full` in the long version, `ci` otherwise."""
    return full if FULL else ci


def record(name: str, **figures: Any) -> None:
    """Print one run's figures and append them to `$RELIABILITY_RESULTS` (JSON lines) when set.

    RELIABILITY.md's table is filled from these records, so every figure there comes from a real run.
    """
    entry = {"test": name, "full": FULL, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    line = json.dumps(entry, sort_keys=False, default=str)
    print(f"RELIABILITY {line}")
    target = os.environ.get("RELIABILITY_RESULTS")
    if target:
        with Path(target).open("a", encoding="utf-8") as out:
            out.write(line + "\n")
