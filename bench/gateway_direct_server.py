"""The baseline of `gateway_overhead.py`: the local provider behind a bare Litestar route, nothing else.

    python bench/gateway_direct_server.py PORT CATALOG_FILE

Same server stack as the gateway (uvicorn, httptools, uvloop, msgspec decoding of the body), but no
authentication, credits, cache, routing, metrics, spans or log lines.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec
import uvicorn
from litestar import Litestar, Request, Response, post

from gateway.providers.catalog import load_catalog
from gateway.providers.local import LocalProvider
from gateway.schema import REQUEST_DECODER


def create_app(catalog_file: str) -> Litestar:
    catalog = load_catalog(catalog_file)
    provider = LocalProvider("local")

    @post("/v1/chat/completions", status_code=200)
    async def chat_completions(request: Request[Any, Any, Any]) -> Response[bytes]:
        try:
            chat = REQUEST_DECODER.decode(await request.body())
        except msgspec.MsgspecError as exc:
            return Response(str(exc).encode(), status_code=400)
        route = catalog.routes_for(chat.model)[0]
        completion = await provider.complete(chat, route.model)
        return Response(completion.body, media_type="application/json")

    return Litestar(route_handlers=[chat_completions], logging_config=None)


if __name__ == "__main__":
    uvicorn.run(
        create_app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False
    )
