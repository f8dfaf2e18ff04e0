"""`POST /ingest`: an NDJSON body of log lines, answered 200 only once they are fsync'd in the spool.

The body may be gzip-compressed (`Content-Encoding: gzip`, as the services' log forwarder sends large
batches); its decompressed size is bounded like a plain body's (413 beyond), so a small bomb cannot
inflate past `SHIPPER_INGEST_MAX_BYTES` in memory.
"""

from __future__ import annotations

import zlib
from typing import Annotated, Any

from litestar import Request, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import QueryParameter

from log_shipper.batcher import LogBatcher, SpoolWriteError
from log_shipper.labels import is_service_value
from telemetry.errors import ApiError

_GZIP = 31
"""zlib's `wbits` for a gzip member (header and trailer checked)."""


def ingest_route(max_body_bytes: int) -> HTTPRouteHandler:
    """The route, with its body bounded to `max_body_bytes` (413 beyond), compressed or not."""

    @post("/ingest", request_max_body_size=max_body_bytes, status_code=200, tags=["ingest"])
    async def ingest(
        request: Request[Any, Any, Any],
        service: Annotated[str | None, QueryParameter(max_length=128)] = None,
    ) -> dict[str, int]:
        """Ship the body's lines; `?service=` names the service of lines that carry none."""
        batcher: LogBatcher = request.app.state.batcher
        default = request.app.state.default_service
        if service is not None:
            if not is_service_value(service):
                raise ApiError(400, "service must be a short name of letters, digits and ._:/-")
            default = service
        body = decode_body(await request.body(), request.headers.get("content-encoding"), max_body_bytes)
        block = body.rstrip(b"\r\n")
        try:
            generation = await batcher.add(block, "http", default)
            await batcher.flush(generation)
        except SpoolWriteError:
            raise ApiError(
                503, "the spool cannot be written; retry later", code="spool_unavailable"
            ) from None
        return {"accepted": _count(block.split(b"\n"))}

    return ingest


def decode_body(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body as sent (`identity`) or gunzipped, at most `max_bytes` either way; 400/413/415 otherwise."""
    coding = (encoding or "identity").strip().lower()
    if coding == "identity":
        return body
    if coding != "gzip":
        raise ApiError(415, f"Content-Encoding {coding!r} is not supported; send gzip or identity")
    return gunzip(body, max_bytes)


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Every gzip member of `data`, decompressed; `ApiError` 413 past `max_bytes`, 400 if corrupt."""
    out: list[bytes] = []
    size = 0
    while data:
        inflater = zlib.decompressobj(_GZIP)
        try:
            chunk = inflater.decompress(data, max_bytes - size + 1)
        except zlib.error as exc:
            raise ApiError(400, f"the gzip body is corrupt: {exc}") from None
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"the decompressed body is larger than {max_bytes} bytes")
        if not inflater.eof:
            raise ApiError(400, "the gzip body is truncated")
        out.append(chunk)
        data = inflater.unused_data  # concatenated members are one stream (RFC 1952)
    return b"".join(out)


def _count(lines: list[bytes]) -> int:
    """Lines the parser keeps: blank ones are skipped."""
    return sum(1 for line in lines if line and not line.isspace())
