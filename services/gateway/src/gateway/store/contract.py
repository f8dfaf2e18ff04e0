"""What every user store offers: the `Store` protocol, its value types, and the helpers both engines share.

Two engines implement it: SQLite (`gateway.store.sqlite`, the embedded default, one process per file) and
PostgreSQL (`gateway.store.postgres`, `DATABASE_URL`, shared by any number of replicas). One test suite
(`tests/unit/gateway/test_store.py`) runs against both.

Money is integer micro-credits. A request *reserves* its worst case before calling a provider — one
conditional statement that takes the balance down only if it covers the amount, so concurrent requests
never overspend — and then *settles* the reservation at the actual cost (or *releases* it whole when the
call failed). The reservation is a `Hold`: PostgreSQL records it in a `holds` row, so a replica that dies
mid-request does not take the money with it (another replica returns expired holds).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

from telemetry.errors import ApiError

MICROS_PER_CREDIT = 1_000_000
DEMO_USER_ID = 1
DEMO_KEY_FILE = "demo-api-key.txt"
"""Beside the database: the generated demo key, readable by its owner only (the data dir is git-ignored)."""
Engine = Literal["sqlite", "postgresql"]
BudgetPeriod = Literal["daily", "weekly", "monthly"]
BUDGET_PERIODS: tuple[BudgetPeriod, ...] = ("daily", "weekly", "monthly")
KEY_COLUMNS = frozenset({"alias", "budget_micros", "budget_period", "rpm", "tpm", "models", "expires_at"})
"""What `create_key` / `update_key` may set: a key's alias and limits (never its hash, owner or spend)."""


def hash_key(key: str) -> str:
    """sha256 of an API key: keys are high-entropy, so a fast hash is enough and lookups stay cheap."""
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    """A new API key."""
    return "gw_" + secrets.token_urlsafe(32)


def to_credits(micros: int) -> float:
    """Micro-credits as credits."""
    return micros / MICROS_PER_CREDIT


def to_micros(amount: float) -> int:
    """Credits as whole micro-credits."""
    return round(amount * MICROS_PER_CREDIT)


def default_alias(key: str) -> str:
    """The alias of a key made without one (the demo key, `add_key`): `key-` and 8 hex of its hash."""
    return "key-" + hash_key(key)[:8]


def iso(moment: datetime) -> str:
    """UTC, to the second, `Z`: how both engines write a key's times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def period_start(period: BudgetPeriod, now: datetime) -> datetime:
    """When the budget period holding `now` began (UTC): midnight, Monday midnight, the 1st at midnight.

    The same boundaries as PostgreSQL's `date_trunc('day' | 'week' | 'month', ...)` in UTC.
    """
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_period_start(period: BudgetPeriod, now: datetime) -> datetime:
    """When the budget period holding `now` ends (its spend goes back to 0)."""
    start = period_start(period, now)
    if period == "daily":
        return start + timedelta(days=1)
    if period == "weekly":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as requests are checked against it: owner, alias and limits. Never the key itself.

    Each replica remembers the keys it has seen; a change or revocation reaches every replica's memory at
    once (SQLite: the same process; PostgreSQL: `NOTIFY`, see `gateway.store.postgres`).
    """

    id: int
    user_id: int
    alias: str
    budget_micros: int | None = None
    budget_period: BudgetPeriod | None = None
    rpm: int | None = None
    tpm: int | None = None
    models: frozenset[str] | None = None
    """Model ids this key may call; None: any."""
    expires_at: float | None = None
    """Unix seconds after which the key is refused; None: never."""
    revoked: bool = False

    @property
    def rate_limited(self) -> bool:
        """Whether the key has a requests or tokens per minute limit."""
        return self.rpm is not None or self.tpm is not None

    def expired(self, now: float) -> bool:
        """Whether the key is past its expiry at unix time `now`."""
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as `GET /api/keys` shows it: alias, limits, spend, times. Never the key or its hash."""

    id: int
    user_id: int
    alias: str
    created_at: str
    budget: float | None
    budget_period: BudgetPeriod | None
    budget_reset_at: str | None
    """When the spend goes back to 0 (the next period's start); None without a period."""
    spend: float
    """Credits charged through this key, in the current budget period (all time without a period)."""
    rpm: int | None
    tpm: int | None
    models: list[str] | None
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A key's row as either engine reads it, times as UTC datetimes."""

    id: int
    user_id: int
    alias: str
    created_at: datetime
    budget_micros: int | None
    budget_period: BudgetPeriod | None
    rpm: int | None
    tpm: int | None
    models: list[str] | None
    expires_at: datetime | None
    revoked_at: datetime | None
    spend_micros: int
    """Spend recorded in the row's period (`period_start`); 0 in effect once that period is over."""
    period_start: datetime | None
    last_used_at: datetime | None

    def spend(self, now: datetime) -> int:
        """Micro-credits spent in the period holding `now` (all time without a period)."""
        if self.budget_period is None:
            return self.spend_micros
        if self.period_start is not None and self.period_start >= period_start(self.budget_period, now):
            return self.spend_micros
        return 0

    def api_key(self) -> ApiKey:
        """What requests are checked against."""
        return ApiKey(
            id=self.id,
            user_id=self.user_id,
            alias=self.alias,
            budget_micros=self.budget_micros,
            budget_period=self.budget_period,
            rpm=self.rpm,
            tpm=self.tpm,
            models=frozenset(self.models) if self.models is not None else None,
            expires_at=self.expires_at.timestamp() if self.expires_at is not None else None,
            revoked=self.revoked_at is not None,
        )

    def record(self, now: datetime, pending_micros: int = 0) -> KeyRecord:
        """What the key API shows, spend in the current period (plus what is not yet written)."""
        period = self.budget_period
        return KeyRecord(
            id=self.id,
            user_id=self.user_id,
            alias=self.alias,
            created_at=iso(self.created_at),
            budget=to_credits(self.budget_micros) if self.budget_micros is not None else None,
            budget_period=period,
            budget_reset_at=iso(next_period_start(period, now)) if period is not None else None,
            spend=to_credits(self.spend(now) + pending_micros),
            rpm=self.rpm,
            tpm=self.tpm,
            models=sorted(self.models) if self.models is not None else None,
            expires_at=iso(self.expires_at) if self.expires_at is not None else None,
            revoked_at=iso(self.revoked_at) if self.revoked_at is not None else None,
            last_used_at=iso(self.last_used_at) if self.last_used_at is not None else None,
        )


@dataclass(frozen=True, slots=True)
class User:
    """A user's public profile."""

    id: int
    username: str
    created_at: str


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """What a user spent on one model."""

    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    credits: float


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation: `micros` taken from `user_id`'s balance until settled or released.

    `id` names the PostgreSQL `holds` row (chosen by the replica, so a retried settlement names the same
    row and cannot apply twice); SQLite does not record holds and leaves it 0.
    """

    user_id: int
    micros: int
    id: int = 0
    key_id: int = 0
    """The key the request came with (0: none); its spend grows by what the hold settles at."""
    key_held: bool = False
    """The amount also counts against the key's budget until settled (SQLite keeps that in memory)."""


class StoreConfigurationError(Exception):
    """`DATABASE_URL` names a database this gateway cannot use (bad password, no such database, ...)."""


class StoreUnavailable(ApiError):  # noqa: N818 - reads as the condition it reports, like the 503 it is
    """The database cannot be reached: 503 in OpenAI's error shape, nothing charged."""

    def __init__(self, operation: str) -> None:
        super().__init__(
            503,
            f"the user store is unavailable ({operation}); nothing was charged, retry shortly",
            type_="server_error",
            code="store_unavailable",
        )
        self.headers = {"Retry-After": "2"}


class KeyRefused(ApiError):  # noqa: N818 - reads as the condition it reports
    """The store refused a request for its key: revoked or expired (401), over budget (402).

    `reason` is one of the fixed `gateway_limit_rejections_total` reasons.
    """

    def __init__(self, status_code: int, reason: str, message: str, code: str) -> None:
        super().__init__(status_code, message, code=code)
        self.reason = reason
        if status_code == 401:
            self.headers = {"WWW-Authenticate": 'Bearer realm="gatewayz"'}


def key_revoked() -> KeyRefused:
    """401: the key was revoked."""
    return KeyRefused(401, "key_revoked", "this API key has been revoked", "api_key_revoked")


def key_expired() -> KeyRefused:
    """401: the key is past its expiry."""
    return KeyRefused(401, "key_expired", "this API key has expired", "api_key_expired")


def budget_exceeded(alias: str, worst_case_micros: int) -> KeyRefused:
    """402: the key's budget cannot cover the request's worst case."""
    return KeyRefused(
        402,
        "budget_exceeded",
        f"budget exceeded: key {alias!r} cannot cover this request's worst case of "
        f"{to_credits(worst_case_micros)} credits in its budget (GET /api/keys shows its spend)",
        "budget_exceeded",
    )


class AliasInUse(ApiError):  # noqa: N818 - reads as the condition it reports, like the 409 it is
    """409: another key that is not revoked has this alias."""

    def __init__(self, alias: str) -> None:
        super().__init__(409, f"alias {alias!r} is used by another key", code="alias_in_use")


class Store(Protocol):
    """Users, hashed API keys, integer micro-credit balances, usage by model; the same on every engine."""

    engine: Engine
    maintenance_seconds: float
    """How often `maintain()` should run (the app's background task calls it)."""

    async def ensure_demo_user(self, balance: float, bootstrap_key: str | None) -> str | None:
        """Create demo user 1 once; give it `bootstrap_key`, else a generated key if none (returned)."""
        ...

    async def create_user(self, username: str, balance: float) -> int:
        """A new user holding `balance` credits; its id."""
        ...

    async def add_key(self, user_id: int, key: str) -> None:
        """Let `key` act as `user_id` (idempotent); only its hash is stored, its alias is `default_alias`."""
        ...

    async def authenticate(self, key: str) -> int | None:
        """The user `key` belongs to, or None (also when it is revoked or expired)."""
        ...

    async def lookup(self, key: str) -> ApiKey | None:
        """The key with its limits (revoked ones too, flagged), or None when no key has this hash."""
        ...

    async def create_key(self, user_id: int, key: str, fields: Mapping[str, object]) -> KeyRecord:
        """A new key for `user_id` with the `KEY_COLUMNS` in `fields`; `AliasInUse` if the alias is taken."""
        ...

    async def keys(self, user_id: int | None, limit: int, offset: int) -> list[KeyRecord]:
        """Keys by id (of one user when given), revoked ones included."""
        ...

    async def key(self, key_id: int) -> KeyRecord | None:
        """One key, or None."""
        ...

    async def update_key(self, key_id: int, fields: Mapping[str, object]) -> KeyRecord | None:
        """Change `KEY_COLUMNS` of a key (None clears a limit); every replica uses the change at once."""
        ...

    async def revoke_key(self, key_id: int) -> KeyRecord | None:
        """Revoke a key (idempotent); every replica refuses it from the moment this returns."""
        ...

    async def user(self, user_id: int) -> User | None:
        """The public profile, or None."""
        ...

    async def balance(self, user_id: int) -> float:
        """Credits left (0 for no such user)."""
        ...

    async def usage(self, user_id: int) -> list[ModelUsage]:
        """Usage by model, most credits first."""
        ...

    async def reserve(self, user_id: int, micros: int, key: ApiKey | None = None) -> Hold | None:
        """Hold `micros` against the balance in one conditional statement; None when the balance is short.

        With `key`, its budget too (raises `KeyRefused` when it cannot cover `micros`, or when the key was
        revoked or expired meanwhile); the key's spend grows by what the hold settles at.
        """
        ...

    async def release(self, hold: Hold) -> None:
        """Give a hold back whole (the call failed)."""
        ...

    async def settle(
        self, hold: Hold, model: str, *, cost: int, prompt_tokens: int, completion_tokens: int
    ) -> int:
        """Charge `cost` against the hold (an overrun only as far as the balance goes), record usage.

        The micro-credits actually charged.
        """
        ...

    async def maintain(self) -> None:
        """Periodic upkeep: commit what is pending; PostgreSQL also renews holds and returns expired ones."""
        ...

    async def close(self) -> None:
        """Write what is pending (bounded in time) and close."""
        ...


def write_demo_key(db_path: str, key: str) -> Path:
    """Keep the generated demo key beside the database, owner-readable only; the file's path."""
    directory = Path(db_path).parent if db_path != ":memory:" else Path("data")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / DEMO_KEY_FILE
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(key + "\n")
    return path
