"""A strict fake of Loki's read side (BACKENDS.md): `/ready` and `GET /loki/api/v1/query_range`.

Lines come from a `source` callable (for instance a service's captured stdout turned into streams), so a
test sees exactly what a log shipper would have pushed. The LogQL it understands is the subset the admin
service sends — a stream selector of `=` matchers and `|=` line filters; anything else is a 400, as Loki
answers a query it cannot parse.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from support.loopback import LoopbackServer, QuietHandler

Entry = tuple[Mapping[str, str], int, str]
"""(stream labels, timestamp in unix nanoseconds, line)."""

_SELECTOR = re.compile(r"^\{(?P<matchers>[^}]*)\}(?P<pipeline>.*)$", re.DOTALL)
_MATCHER = re.compile(r'^\s*(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*$')
_LINE_FILTER = re.compile(r'\s*\|=\s*"(?P<text>(?:[^"\\]|\\.)*)"')
_MAX_LIMIT = 5000


class LogQLError(ValueError):
    """The query is outside the supported subset."""


def parse_logql(query: str) -> tuple[dict[str, str], list[str]]:
    """(label equalities, line filter substrings) of `{a="b", …} |= "x" |= "y"`."""
    match = _SELECTOR.match(query.strip())
    if match is None:
        raise LogQLError("parse error : syntax error: unexpected IDENTIFIER, expecting { ")
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in match["matchers"].split(","))):
        matcher = _MATCHER.match(part)
        if matcher is None:
            raise LogQLError(f"parse error : unsupported matcher {part!r}")
        labels[matcher["name"]] = matcher["value"]
    if not labels:
        raise LogQLError("parse error : queries require at least one regexp or equality matcher")
    pipeline = match["pipeline"]
    filters: list[str] = []
    position = 0
    while position < len(pipeline.rstrip()):
        stage = _LINE_FILTER.match(pipeline, position)
        if stage is None:
            raise LogQLError(f"parse error : unsupported pipeline {pipeline[position:]!r}")
        filters.append(stage["text"].replace('\\"', '"').replace("\\\\", "\\"))
        position = stage.end()
    return labels, filters


def _nanoseconds(value: str | None, default: int) -> int:
    if value is None:
        return default
    if re.fullmatch(r"\d+", value):
        return int(value)
    raise ValueError(f'invalid parameter: cannot parse "{value}" to a valid timestamp')


class _LokiQueryHandler(QuietHandler):
    server: Any

    def do_GET(self) -> None:  # noqa: N802 - http.server dispatches on this name
        parts = urlsplit(self.path)
        self.server.requests.append(self.path)
        if parts.path == "/ready":
            self.reply(200, b"ready\n")
            return
        if parts.path != "/loki/api/v1/query_range":
            self.reply(404, b"404 page not found\n")
            return
        params = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        try:
            body = self.server.query(params)
        except (LogQLError, ValueError) as exc:
            self.reply(400, str(exc).encode())
            return
        self.reply(200, json.dumps(body).encode(), "application/json; charset=UTF-8")


class FakeLokiQuery(LoopbackServer):
    """Loki's query API over whatever `source()` returns at the time of each query."""

    def __init__(self, source: Callable[[], Iterable[Entry]] | None = None) -> None:
        self._added: list[Entry] = []
        self._lock = threading.Lock()
        self._source = source
        super().__init__(_LokiQueryHandler, query=self.query, requests=[])

    @property
    def requests(self) -> list[str]:
        return list(self.httpd.requests)  # type: ignore[attr-defined]

    def add(self, labels: Mapping[str, str], line: str, timestamp_ns: int | None = None) -> None:
        with self._lock:
            self._added.append((dict(labels), timestamp_ns or time.time_ns(), line))

    def entries(self) -> list[Entry]:
        with self._lock:
            added = list(self._added)
        return added + (list(self._source()) if self._source else [])

    def query(self, params: Mapping[str, str]) -> dict[str, Any]:
        """The `query_range` answer: streams of matching entries in [start, end), per `direction`/`limit`."""
        query = params.get("query")
        if not query:
            raise LogQLError("parse error : syntax error: unexpected $end")
        labels, filters = parse_logql(query)
        now = time.time_ns()
        start = _nanoseconds(params.get("start"), now - 3600 * 10**9)
        end = _nanoseconds(params.get("end"), now)
        limit = int(params.get("limit", "100"))
        if not 0 < limit <= _MAX_LIMIT:
            raise ValueError(
                f"max entries limit per query exceeded, limit > max_entries_limit ({limit} > {_MAX_LIMIT})"
            )
        direction = params.get("direction", "backward")
        if direction not in {"forward", "backward"}:
            raise ValueError(f"invalid direction {direction!r}")
        matched = [
            (entry_labels, stamp, line)
            for entry_labels, stamp, line in self.entries()
            if start <= stamp < end
            and all(entry_labels.get(name) == value for name, value in labels.items())
            and all(text in line for text in filters)
        ]
        matched.sort(key=lambda entry: entry[1], reverse=direction == "backward")
        streams: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
        for entry_labels, stamp, line in matched[:limit]:
            streams.setdefault(tuple(sorted(entry_labels.items())), []).append([str(stamp), line])
        return {
            "status": "success",
            "data": {
                "resultType": "streams",
                "result": [{"stream": dict(key), "values": values} for key, values in streams.items()],
                "stats": {"summary": {"totalEntriesReturned": min(len(matched), limit)}},
            },
        }


def entries_from_json_lines(lines: Iterable[str], environment: str = "test") -> list[Entry]:
    """What a log shipper would push for SPEC §4 JSON lines: labels service, level, environment."""
    out: list[Entry] = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or "service" not in record:
            continue
        level = record.get("level", "INFO")
        labels = {"service": record["service"], "level": level, "environment": environment}
        out.append((labels, _timestamp_ns(record.get("timestamp")), line))
    return out


def _timestamp_ns(text: object) -> int:
    from datetime import datetime  # noqa: PLC0415 - only this helper needs it

    if isinstance(text, str):
        try:
            return int(datetime.fromisoformat(text).timestamp() * 1e9)
        except ValueError:
            pass
    return time.time_ns()
