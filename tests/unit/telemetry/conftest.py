"""A small instrumented app exercising every middleware path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from litestar import Litestar, Request, get, post
from litestar.params import FromPath
from litestar.response import Stream
from litestar.testing import TestClient

from telemetry import Telemetry, health, instrument, metrics_endpoint
from telemetry.errors import EXCEPTION_HANDLERS


class BoomError(RuntimeError):
    """Raised by the /boom route."""


@get("/items/{item_id:int}", sync_to_thread=False)
def get_item(item_id: FromPath[int]) -> dict[str, int]:
    return {"id": item_id}


@post("/echo", status_code=200)
async def echo(request: Request[object, object, object]) -> Stream:
    body = await request.body()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield body

    return Stream(chunks())


@get("/boom", sync_to_thread=False)
def boom() -> None:
    raise BoomError("kaboom")


@get("/sleep")
async def sleep() -> None:
    await asyncio.sleep(30)


def build_app(telemetry: Telemetry) -> Litestar:
    app = Litestar(
        route_handlers=[health, metrics_endpoint(telemetry.registry), get_item, echo, boom, sleep],
        exception_handlers=EXCEPTION_HANDLERS,
        logging_config=None,
        # Handlers here are resolved by module name, and every test folder's conftest is named `conftest`:
        # whichever loaded last owns that name, so the handlers' annotation names are given explicitly.
        signature_namespace={"Stream": Stream, "Request": Request, "FromPath": FromPath},
    )
    return instrument(app, telemetry)


@pytest.fixture(name="build_app")
def build_app_fixture() -> Callable[[Telemetry], Litestar]:
    return build_app


@pytest.fixture
def app(gateway_telemetry: Telemetry) -> Litestar:
    return build_app(gateway_telemetry)


@pytest.fixture
def client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    with TestClient(app) as client:
        yield client
