"""How the log forwarder's batches reach the log-shipper: the transport protocol, its outcomes, the HTTP one.

`HttpTransport` posts NDJSON to `POST /ingest`, gzip-compressed where that pays (`gzip_pays`); the shipper's
own lines take an in-process transport (`log_shipper.sources.own`).
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol
from urllib.parse import urlencode, urlsplit

from telemetry.post_connection import POST_ERRORS, PostConnection
from telemetry.retry import parse_retry_after

GZIP_MIN_BYTES = 1024
"""Smaller bodies are sent as they are: gzip's header and the CPU would cost more than they save."""


class Outcome(Enum):
    """What the receiver made of one batch."""

    ACKED = "acked"
    RETRY = "retry"
    REJECTED = "rejected"
    TOO_LARGE = "too_large"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt's result: outcome, a short reason (`connection`, `5xx`, …), an honoured Retry-After."""

    outcome: Outcome
    reason: str
    retry_after: float | None = None
    detail: str = ""


class ForwardTransport(Protocol):
    """Delivers one batch of encoded lines (`HttpTransport`, or the shipper's own in-process one)."""

    def send(self, lines: Sequence[bytes], timeout: float) -> Delivery:
        """Deliver `lines` (each ending in a newline) within `timeout` seconds."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class HttpTransport:
    """POSTs NDJSON to the shipper's `/ingest?service=<name>`; gzip-compressed when `gzip` and big enough."""

    def __init__(self, url: str, service: str, timeout: float, *, gzip: bool = True) -> None:
        parts = urlsplit(url)
        if "service=" not in parts.query:
            query = "&".join(filter(None, (parts.query, urlencode({"service": service}))))
            url = parts._replace(query=query).geturl()
        self.url = url
        self.gzip = gzip
        self._connection = PostConnection(url, timeout, {"Content-Type": "application/x-ndjson"})

    def send(self, lines: Sequence[bytes], timeout: float) -> Delivery:
        """One POST; 200 is the ack, 413 asks for smaller batches, 429/5xx/network errors are retried."""
        body = b"".join(lines)
        headers = {}
        if self.gzip and len(body) >= GZIP_MIN_BYTES:
            body = zlib.compress(body, 1, wbits=31)  # wbits 31: a gzip member, as `gzip.compress` writes
            headers["Content-Encoding"] = "gzip"
        try:
            answer = self._connection.post(body, headers, timeout)
        except TimeoutError as exc:
            return Delivery(Outcome.RETRY, "timeout", detail=type(exc).__name__)
        except POST_ERRORS as exc:
            return Delivery(Outcome.RETRY, "connection", detail=f"{type(exc).__name__}: {exc}")
        status = answer.status
        if status == 200:
            return Delivery(Outcome.ACKED, "200")
        detail = answer.text[:200]
        if status == 413:
            return Delivery(Outcome.TOO_LARGE, "413", detail=detail)
        if status == 429 or status >= 500:
            reason = "429" if status == 429 else "5xx"
            return Delivery(
                Outcome.RETRY,
                reason,
                parse_retry_after(answer.retry_after),
                f"HTTP {status}: {detail}",
            )
        return Delivery(Outcome.REJECTED, str(status), detail=f"HTTP {status}: {detail}")

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()


def gzip_pays(url: str) -> bool:
    """True when the shipper is reached over a public network, where bytes cost more than compressing them.

    gzip level 1 adds ~10 k instructions a line on the service (twice the rest of forwarding, BENCHMARKS.md,
    "Log forwarding") and ~0.7 µs on the shipper to inflate, to save ~250 bytes; loopback and private
    networks (Railway's `*.railway.internal`, compose's one-label names, private addresses) carry those bytes
    for far less.
    """
    host = (urlsplit(url).hostname or "").lower()
    if "." not in host or host.endswith((".internal", ".local", ".localhost")) or host == "localhost":
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True  # a public DNS name
    return address.is_global
