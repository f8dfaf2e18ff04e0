"""The key-management API (admin key only): create, list, read, change and revoke users' API keys.

`POST /api/keys` answers 201 with the key itself, shown this once (only its SHA-256 is stored); every other
answer shows a key by its id and alias, limits, spend and times, never the key. A change or revocation is
used by every replica from the moment the answer is sent (see `gateway.store`).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, QueryParameter

from gateway.auth import bearer_key, is_admin, unauthorized
from gateway.schema import describe_validation_error
from gateway.services import GatewayServices, services
from gateway.store import KeyRecord, generate_key, to_micros
from telemetry.errors import ApiError, error_responses

Alias = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$")]
"""Letters, digits and `._:@/-`: it is written into log lines and shown in dashboards."""
Budget = Annotated[float, msgspec.Meta(ge=0, le=1e12)]
Rpm = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]
Tpm = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000_000)]
Models = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=256)]], msgspec.Meta(max_length=1000)
]
Expiry = Annotated[datetime, msgspec.Meta(tz=True)]
Period = Literal["daily", "weekly", "monthly"]
_UNSET = msgspec.UNSET


class KeyCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /api/keys` body."""

    user_id: Annotated[int, msgspec.Meta(ge=1)]
    alias: Alias
    budget: Budget | None = None
    budget_period: Period | None = None
    rpm: Rpm | None = None
    tpm: Tpm | None = None
    models: Models | None = None
    expires_at: Expiry | None = None


class KeyUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`PATCH /api/keys/{key_id}` body: only the fields given change; `null` removes a limit."""

    alias: Alias | msgspec.UnsetType = _UNSET
    budget: Budget | msgspec.UnsetType | None = _UNSET
    budget_period: Period | msgspec.UnsetType | None = _UNSET
    rpm: Rpm | msgspec.UnsetType | None = _UNSET
    tpm: Tpm | msgspec.UnsetType | None = _UNSET
    models: Models | msgspec.UnsetType | None = _UNSET
    expires_at: Expiry | msgspec.UnsetType | None = _UNSET


_CREATE = msgspec.json.Decoder(KeyCreate)
_UPDATE = msgspec.json.Decoder(KeyUpdate)
_ADMIN_ONLY = "The admin key (ADMIN_API_KEY) is missing or wrong."
_NO_ADMIN_KEY = "ADMIN_API_KEY is not set: the key API is closed."


def _admin(request: Request[Any, Any, Any]) -> GatewayServices:
    """The services, once the request carries the admin key; 503 when none is configured, 401 otherwise."""
    gateway = services(request)
    if gateway.settings.admin_api_key is None:
        raise ApiError(
            503,
            "the key API is closed: set ADMIN_API_KEY on the gateway to use it",
            type_="server_error",
            code="admin_key_not_configured",
        )
    key = bearer_key(request)
    if not key or not is_admin(key, gateway.settings.admin_api_key):
        raise unauthorized("the key API takes the admin key: Authorization: Bearer <ADMIN_API_KEY>")
    return gateway


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:  # noqa: ANN401 - the decoder's type
    try:
        return decoder.decode(body)
    except msgspec.MsgspecError as exc:
        raise ApiError(400, describe_validation_error(exc), code="invalid_request_body") from None


def _columns(gateway: GatewayServices, fields: dict[str, Any]) -> dict[str, object]:
    """The request's fields as store columns, each checked: models in the catalog, expiry in the future."""
    columns: dict[str, object] = {}
    for name, value in fields.items():
        if name == "budget":
            columns["budget_micros"] = to_micros(value) if value is not None else None
        elif name == "models" and value is not None:
            unknown = sorted(set(value) - set(gateway.catalog.routes))
            if unknown:
                raise ApiError(
                    400, f"models: not in the catalog: {', '.join(unknown)}", code="invalid_request_body"
                )
            columns["models"] = sorted(set(value))
        elif name == "expires_at" and value is not None:
            if value <= datetime.now(UTC):
                raise ApiError(400, "expires_at: must be in the future", code="invalid_request_body")
            columns["expires_at"] = value.astimezone(UTC).replace(microsecond=0)
        else:
            columns[name] = value
    return columns


def _shown(record: KeyRecord) -> dict[str, Any]:
    return {"object": "api_key", **asdict(record)}


_ERRORS = error_responses(400, 401, 404, 409, 503)


@post("/api/keys", tags=["keys"], status_code=201, responses=_ERRORS)
async def create_key(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """A new key for a user, with its alias and optional budget, rpm/tpm, model allow-list and expiry.

    The answer carries `key`, shown this once.
    """
    gateway = _admin(request)
    body: KeyCreate = _decode(_CREATE, await request.body())
    if body.budget_period is not None and body.budget is None:
        raise ApiError(400, "budget_period: needs a budget", code="invalid_request_body")
    if await gateway.store.user(body.user_id) is None:
        raise ApiError(400, f"user_id: user {body.user_id} does not exist", code="invalid_request_body")
    fields = {name: getattr(body, name) for name in body.__struct_fields__ if name != "user_id"}
    secret = generate_key()
    record = await gateway.store.create_key(body.user_id, secret, _columns(gateway, fields))
    return Response({**_shown(record), "key": secret}, status_code=201)


@get("/api/keys", tags=["keys"], responses=_ERRORS)
async def list_keys(
    request: Request[Any, Any, Any],
    user_id: Annotated[int | None, QueryParameter(ge=1)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    offset: Annotated[int, QueryParameter(ge=0, le=1_000_000_000)] = 0,
) -> dict[str, Any]:
    """Keys by id (one user's with `user_id`), revoked ones included: alias, limits, spend, last use."""
    gateway = _admin(request)
    records = await gateway.store.keys(user_id, limit, offset)
    return {"object": "list", "data": [_shown(record) for record in records]}


@get("/api/keys/{key_id:int}", tags=["keys"], responses=_ERRORS)
async def get_key(request: Request[Any, Any, Any], key_id: FromPath[int]) -> dict[str, Any]:
    """One key."""
    record = await _admin(request).store.key(key_id)
    if record is None:
        raise NotFoundException(f"key {key_id} not found")
    return _shown(record)


@patch("/api/keys/{key_id:int}", tags=["keys"], responses=_ERRORS)
async def update_key(request: Request[Any, Any, Any], key_id: FromPath[int]) -> dict[str, Any]:
    """Change a key's alias or limits (`null` removes one); every replica applies it to the next request."""
    gateway = _admin(request)
    body: KeyUpdate = _decode(_UPDATE, await request.body())
    fields = {
        name: getattr(body, name)
        for name in body.__struct_fields__
        if getattr(body, name) is not msgspec.UNSET
    }
    current = await gateway.store.key(key_id)
    if current is None:
        raise NotFoundException(f"key {key_id} not found")
    budget = fields.get("budget", current.budget)
    if fields.get("budget_period", current.budget_period) is not None and budget is None:
        raise ApiError(400, "budget_period: needs a budget", code="invalid_request_body")
    record = await gateway.store.update_key(key_id, _columns(gateway, fields))
    if record is None:
        raise NotFoundException(f"key {key_id} not found")
    return _shown(record)


@delete("/api/keys/{key_id:int}", tags=["keys"], status_code=200, responses=_ERRORS)
async def revoke_key(request: Request[Any, Any, Any], key_id: FromPath[int]) -> dict[str, Any]:
    """Revoke a key: refused (401) on every replica from now on. Revoking it again changes nothing."""
    record = await _admin(request).store.revoke_key(key_id)
    if record is None:
        raise NotFoundException(f"key {key_id} not found")
    return _shown(record)


KEY_ROUTES = [create_key, list_keys, get_key, update_key, revoke_key]
