"""`DirectRoute`: one route served inside Litestar's exception layer, as Litestar itself would answer it."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request, get, post
from litestar.testing import TestClient
from litestar.types import ASGIApp

from gateway.direct_route import DirectRoute, serve_directly
from gateway.responses import JsonAnswer
from telemetry.errors import EXCEPTION_HANDLERS, ApiError

calls: list[str] = []


@post("/direct", status_code=200)
async def direct(request: Request[Any, Any, Any]) -> ASGIApp:
    """Answers by what the body says: ok, a 402 ApiError, or a bug."""
    body = await request.body()
    calls.append(request.scope["route_handler"].handler_name)
    if body == b"402":
        raise ApiError(402, "no credits", code="insufficient_credits")
    if body == b"bug":
        raise RuntimeError("a bug")
    return JsonAnswer(b'{"ok": true}', [(b"x-direct", b"yes")])


@get("/other", sync_to_thread=False)
def other() -> dict[str, str]:
    return {"other": "yes"}


def guard(*_: object) -> None:
    return None


@post("/guarded", status_code=200, guards=[guard])
async def guarded(request: Request[Any, Any, Any]) -> ASGIApp:
    return JsonAnswer(b"{}", [])


def make_app() -> tuple[Litestar, list[Exception]]:
    seen: list[Exception] = []

    async def after_exception(exc: Exception, _scope: object) -> None:
        seen.append(exc)

    app = Litestar([direct, other, guarded], exception_handlers=EXCEPTION_HANDLERS, logging_config=None)
    app.after_exception.append(after_exception)
    assert serve_directly(app, "/direct")
    return app, seen


class TestDirectRoute:
    def test_served_by_the_handler_function(self):
        """The handler runs with its route handler in the scope; its ASGI answer is sent as it is."""
        app, _ = make_app()
        assert isinstance(app.asgi_handler.app, DirectRoute)
        with TestClient(app) as client:
            response = client.post("/direct", content=b"ok")
        assert response.status_code == 200
        assert response.json() == {"ok": True}
        assert response.headers["x-direct"] == "yes"
        assert calls[-1] == "direct"

    def test_errors_answer_through_the_apps_exception_handlers_and_hooks(self):
        """An ApiError is its OpenAI-shaped status; a bug a 500 without a traceback; hooks see both."""
        app, seen = make_app()
        with TestClient(app, raise_server_exceptions=False) as client:
            refused = client.post("/direct", content=b"402")
            broken = client.post("/direct", content=b"bug")
        assert refused.status_code == 402
        assert refused.json()["error"] == {
            "message": "no credits",
            "type": "insufficient_credits",
            "code": "insufficient_credits",
        }
        assert broken.status_code == 500
        assert broken.json()["error"]["type"] == "server_error"
        assert "Traceback" not in broken.text
        assert [type(exc).__name__ for exc in seen] == ["ApiError", "RuntimeError"]

    def test_invalid_host_is_refused_as_litestar_does(self):
        """A Host header with characters no host has is a 400, as the router answers it."""
        app, _ = make_app()
        with TestClient(app) as client:
            response = client.post("/direct", content=b"ok", headers={"host": "bad host"})
        assert response.status_code == 400

    def test_everything_else_goes_to_the_router(self):
        """Other paths and other methods on the same path are Litestar's: 200 elsewhere, 405 here."""
        app, _ = make_app()
        with TestClient(app) as client:
            assert client.get("/other").json() == {"other": "yes"}
            assert client.get("/direct").status_code == 405
            assert client.get("/nowhere").status_code == 404

    def test_a_handler_with_guards_is_left_to_litestar(self):
        """A handler that needs Litestar's machinery (here a guard) is not taken over."""
        app = Litestar([direct, other, guarded], exception_handlers=EXCEPTION_HANDLERS, logging_config=None)
        assert not DirectRoute(app, "/guarded", "POST").active
        assert not serve_directly(app, "/guarded")
        assert app.asgi_handler.app is app.asgi_router

    def test_the_route_stays_documented(self):
        """OpenAPI still describes the route: it is registered as any other."""
        app, _ = make_app()
        assert "post" in app.openapi_schema.to_schema()["paths"]["/direct"]

    def test_the_gateway_serves_chat_directly(self, client):
        """The gateway's app has its chat route in place (so the hot path skips the router)."""
        layer = client.app.asgi_handler
        while not hasattr(layer, "app") or not isinstance(layer.app, DirectRoute):
            layer = layer.app
        assert layer.app._path == "/v1/chat/completions"
