"""`POST /ingest`: an NDJSON body of log lines, answered 200 only once they are fsync'd in the spool."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import QueryParameter

from log_shipper.batcher import LogBatcher, SpoolWriteError
from log_shipper.labels import is_service_value
from telemetry.errors import ApiError


def ingest_route(max_body_bytes: int) -> HTTPRouteHandler:
    """The route, with its body bounded to `max_body_bytes` (413 beyond)."""

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
        body = await request.body()
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


def _count(lines: list[bytes]) -> int:
    """Lines the parser keeps: blank ones are skipped."""
    return sum(1 for line in lines if line and not line.isspace())
