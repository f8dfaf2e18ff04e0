"""Loki stream labels: `service`, `level`, `environment` plus static ones, checked against Loki's rules."""

from __future__ import annotations

import re

import msgspec

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
"""Loki's label-name grammar; anything else answers 400 `couldn't parse labels`."""
MAX_LABEL_VALUE = 2048
"""Loki refuses longer values (`label value too long`)."""
MAX_LABEL_NAMES = 14
"""Loki allows 15 names; one is left for the `service_name` Loki adds itself."""
RESERVED = ("service", "level", "environment")

LEVELS = frozenset(
    {"TRACE", "DEBUG", "INFO", "SUCCESS", "NOTICE", "WARN", "WARNING", "ERROR", "CRITICAL", "FATAL"}
)
"""Level label values kept as written (upper-cased); any other becomes `unknown`."""
UNKNOWN_LEVEL = "unknown"
_SERVICE_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}\Z")
_MAX_SERVICES = 64
_MAX_LEVEL_SPELLINGS = 256


def parse_static_labels(pairs: tuple[str, ...]) -> dict[str, str]:
    """`("team=obs", ...)` as a dict; a `ValueError` names the bad pair."""
    labels: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"SHIPPER_STATIC_LABELS: {pair!r} is not name=value with a Loki label name")
        if name in RESERVED:
            raise ValueError(f"SHIPPER_STATIC_LABELS: {name!r} is set per line and cannot be static")
        if not value or len(value) > MAX_LABEL_VALUE:
            raise ValueError(f"SHIPPER_STATIC_LABELS: {name!r} needs a value of 1 to {MAX_LABEL_VALUE} chars")
        labels[name] = value
    if len(labels) + len(RESERVED) > MAX_LABEL_NAMES:
        raise ValueError(f"SHIPPER_STATIC_LABELS: at most {MAX_LABEL_NAMES - len(RESERVED)} static labels")
    return labels


def is_service_value(value: str) -> bool:
    """A `service` value safe as a label: short, no spaces or quotes."""
    return _SERVICE_VALUE.match(value) is not None


class StreamLabels:
    """Maps (service, level) to the encoded label set, keeping both label values bounded."""

    def __init__(self, environment: str, static: dict[str, str], default_service: str) -> None:
        self._environment = environment[:MAX_LABEL_VALUE] or "unknown"
        self._static = static
        self.default_service = default_service if is_service_value(default_service) else "unknown_service"
        self._services: set[str] = {self.default_service}
        self._levels: dict[str, str] = {}
        self._encoder = msgspec.json.Encoder()

    def service(self, value: object, fallback: str) -> str:
        """`value` when it is a plausible service name and the set of names is small, else `fallback`."""
        if not isinstance(value, str):
            return fallback
        if value in self._services:
            return value
        if len(self._services) < _MAX_SERVICES and is_service_value(value):
            self._services.add(value)
            return value
        return fallback

    def level(self, value: object) -> str:
        """The level label: a known level, upper-cased, else `unknown`."""
        if not isinstance(value, str):
            return UNKNOWN_LEVEL
        label = self._levels.get(value)
        if label is None:
            upper = value.upper()
            label = upper if upper in LEVELS else UNKNOWN_LEVEL
            if len(self._levels) < _MAX_LEVEL_SPELLINGS:
                self._levels[value] = label
        return label

    def encode(self, service: str, level: str) -> bytes:
        """The JSON `stream` object for one stream."""
        return self._encoder.encode(self._labels(service, level))

    def label_set(self, service: str, level: str) -> str:
        r"""The stream's labels in Prometheus label-set syntax, as protobuf pushes carry them.

        Values are quoted as JSON strings: every JSON escape (`\"`, `\\`, `\n`, `\u00XX`) is also a Go
        string escape, which is what Loki's label parser reads.
        """
        pairs = (
            f"{name}={self._encoder.encode(value).decode()}"
            for name, value in self._labels(service, level).items()
        )
        return "{" + ", ".join(pairs) + "}"

    def _labels(self, service: str, level: str) -> dict[str, str]:
        return {"service": service, "level": level, "environment": self._environment, **self._static}
