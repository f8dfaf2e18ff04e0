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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from telemetry.errors import ApiError

MICROS_PER_CREDIT = 1_000_000
DEMO_USER_ID = 1
DEMO_KEY_FILE = "demo-api-key.txt"
"""Beside the database: the generated demo key, readable by its owner only (the data dir is git-ignored)."""
Engine = Literal["sqlite", "postgresql"]


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
        """Let `key` act as `user_id` (idempotent); only its hash is stored."""
        ...

    async def authenticate(self, key: str) -> int | None:
        """The user `key` belongs to, or None."""
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

    async def reserve(self, user_id: int, micros: int) -> Hold | None:
        """Hold `micros` against the balance in one conditional statement; None when the balance is short."""
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
