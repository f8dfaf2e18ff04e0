"""The anchor: a minimal msgspec shipper with no durability (TARGETS.md's 60-line Python shipper).

Reads a file to its end, decodes each line with msgspec, groups by (service, level, environment), gzips at
level 1 and POSTs 1 MiB batches to Loki. No spool, no positions, no retries: what "fast" costs without
guarantees. Usage: python bench/log_shipper_anchor.py <file> <push url>
(waits for the file to appear; exits when its stdin closes)
"""

import http.client
import os
import sys
import time
import urllib.parse
import zlib
from pathlib import Path

import msgspec


class Head(msgspec.Struct):
    timestamp: str | None = None
    level: str | None = None
    service: str | None = None


def main() -> None:
    path, url = sys.argv[1], urllib.parse.urlsplit(sys.argv[2])
    decoder, encoder = msgspec.json.Decoder(Head), msgspec.json.Encoder()
    connection = http.client.HTTPConnection(url.hostname, url.port)
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    environment = os.environ.get("ENVIRONMENT", "development")

    def push(streams: dict[tuple[str, str], list[tuple[str, str]]]) -> None:
        body = {
            "streams": [
                {"stream": {"service": s, "level": lv, "environment": environment}, "values": values}
                for (s, lv), values in streams.items()
            ]
        }
        connection.request("POST", url.path, zlib.compress(encoder.encode(body), 1, 31), headers)
        response = connection.getresponse()
        response.read()
        if response.status != 204:
            raise SystemExit(f"push failed: {response.status}")

    while not Path(path).exists():
        time.sleep(0.01)
    streams: dict[tuple[str, str], list[tuple[str, str]]] = {}
    size = 0
    with Path(path).open("rb") as file:
        for raw in file:
            line = raw.rstrip(b"\n")
            try:
                head = decoder.decode(line)
                key = (head.service or "unknown_service", head.level or "unknown")
            except msgspec.DecodeError:
                key = ("unknown_service", "unknown")
            streams.setdefault(key, []).append((str(time.time_ns()), line.decode()))
            size += len(line) + 32
            if size >= 1024 * 1024:
                push(streams)
                streams, size = {}, 0
    if streams:
        push(streams)
    sys.stdin.read()  # stay alive (for the driver to read our CPU time) until it closes our stdin


if __name__ == "__main__":
    main()
