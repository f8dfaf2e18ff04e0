"""The hot route served straight from the app's exception layer, without Litestar's per-request routing.

For each request Litestar's router validates the Host header, walks its route trie, builds a `Request`,
resolves the handler's kwargs into a signature model (msgspec-converted), opens an exit stack and turns the
return value into a response. For `POST /v1/chat/completions`, a handler taking only the request and
returning an ASGI app, none of that does anything, and it cost ~100 k instructions a request
(`bench/upstream_instructions.py`: 768 k → 666 k; BENCHMARKS.md, "Proxying an OpenAI-compatible
upstream"). `DirectRoute` sits where Litestar's router sits — inside its exception middleware, so errors
become the same OpenAI-shaped answers through the same exception handlers and `after_exception` hooks — and
calls that handler's own function, registered as usual (OpenAPI documents it; every other request goes to
the router). It only takes a handler with nothing for Litestar to do: no guards, dependencies, middleware,
request hooks or response cache (checked at start; otherwise the router serves it).
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar._asgi.utils import is_valid_host
from litestar.enums import ScopeType
from litestar.exceptions import ClientException
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, Method, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState


def _plain(handler: HTTPRouteHandler) -> bool:
    """Nothing per request for Litestar to run around the handler's function."""
    return not (
        handler.resolve_guards()
        or handler.resolve_dependencies()
        or handler.resolve_middleware()
        or handler.resolve_before_request()
        or handler.resolve_after_response()
        or handler.cache
        or any(layer.after_request for layer in handler.ownership_layers)
    )


class DirectRoute:
    """Serves one (method, path) by calling its handler's function; everything else goes to `router`."""

    def __init__(self, app: Litestar, path: str, method: Method) -> None:
        handler = app.route_handler_method_map[path][method]
        assert isinstance(handler, HTTPRouteHandler)  # noqa: S101 - the path is one of ours
        self._router: ASGIApp = app.asgi_router
        self._path = path
        self._method = method
        self._handler = handler
        self._fn: Any = handler.fn
        self._exception_handlers = handler.resolve_exception_handlers()
        self.active = _plain(handler)
        """False when the handler needs Litestar's machinery: then the router serves it as any other."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Call the handler for its (method, path); route anything else."""
        if (
            scope["path"] != self._path
            or scope.get("method") != self._method
            or scope["type"] != ScopeType.HTTP
        ):
            await self._router(scope, receive, send)
            return
        ScopeState.from_scope(scope).exception_handlers = self._exception_handlers
        scope["route_handler"] = self._handler
        scope["path_template"] = self._path
        scope["path_params"] = {}
        for name, value in scope["headers"]:
            if name == b"host":
                if not is_valid_host(value):
                    raise ClientException("Invalid host header")
                break
        answer = await self._fn(Request(scope, receive, send))
        await answer(scope, receive, send)


def serve_directly(app: Litestar, path: str, method: Method = "POST") -> bool:
    """Put a `DirectRoute` for (method, path) in place of `app`'s router, inside its exception middleware.

    Only where the app's outer layer is that middleware around the router (no CORS or OpenTelemetry plugin
    layer between, which would then be skipped); otherwise nothing changes. True when it was put in place.
    """
    route = DirectRoute(app, path, method)
    exception_layer: Any = app.asgi_handler
    if not route.active or getattr(exception_layer, "app", None) is not app.asgi_router:
        return False
    exception_layer.app = route
    return True
