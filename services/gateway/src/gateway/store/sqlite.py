"""The embedded engine: users, hashed API keys, credit balances and usage by model in SQLite (`sqlite3`).

Balances are integer micro-credits, so sums are exact. A request first *reserves* its worst-case cost with one
conditional UPDATE, then *settles* the actual cost: concurrent requests can never spend more than the balance.

Writes are group-committed: statements run inside one open write transaction that is committed every
`FLUSH_SECONDS` (a commit costs ~5x a statement). The write lock serializes writers, so another process on the
same file still sees every committed deduction before its own conditional UPDATE: nobody overspends. A crash
rolls back at most the last `FLUSH_SECONDS` of charges (requests served free, never a balance overdrawn).

Money given back — the unused part of a reservation, a failed call's whole reservation — is summed in memory
per user and written with the commit, like usage: one statement per user per commit instead of one per
request. Until then the balance in the file is lower than the true one, never higher, so deferring a refund
cannot let anyone overspend; `balance()` and a reservation that does not fit write the refunds out first.

`UserStore` is the synchronous engine (each statement takes microseconds, so it runs on the event loop);
`SqliteStore` is the same engine behind the async `Store` contract the gateway uses.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter

from gateway.store.contract import (
    DEMO_USER_ID,
    Engine,
    Hold,
    ModelUsage,
    User,
    generate_key,
    hash_key,
    to_credits,
    to_micros,
)
from gateway.store.metrics import StoreMetrics

FLUSH_SECONDS = 0.25
"""Longest a write waits for its commit; 0 commits every statement."""
_KEY_CACHE_SIZE = 10_000
_SQLITE_MIN_INT, _SQLITE_MAX_INT = -(2**63), 2**63 - 1

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    balance_micros INTEGER NOT NULL CHECK (balance_micros >= 0)
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    user_id INTEGER NOT NULL REFERENCES users(id),
    model TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    credits_micros INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, model)
);
"""
MIGRATIONS = (_SCHEMA_V1,)
"""Schema versions in order; `PRAGMA user_version` says how many a file has. Append, never edit one.
(api_keys' implicit `rowid` is the key's id, so columns a key gains later are an `ALTER TABLE ... ADD`.)"""


def migrate(connection: sqlite3.Connection) -> int:
    """Apply the migrations the file lacks, each in its own write transaction; the resulting version."""
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        connection.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    return max(version, len(MIGRATIONS))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class UserStore:
    """The SQLite store; one connection, used from the event loop (each statement takes microseconds)."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        flush_seconds: float = FLUSH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = connection
        self.flush_seconds = flush_seconds
        self._clock = clock
        self._keys: dict[str, int] = {}
        self._usage: dict[tuple[int, str], list[int]] = {}
        self._refunds: dict[int, int] = {}
        self._began = 0.0

    @classmethod
    def open(cls, path: str, flush_seconds: float = FLUSH_SECONDS) -> UserStore:
        """Open (creating the file, its directory and the schema when missing) in WAL mode."""
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        migrate(connection)
        return cls(connection, flush_seconds)

    def close(self) -> None:
        """Flush what is pending and close the connection."""
        self.flush()
        self._db.close()

    def ensure_demo_user(self, balance: float, bootstrap_key: str | None) -> str | None:
        """Create demo user 1 if missing; give it `bootstrap_key`, else a new key when it has none."""
        self._db.execute(
            "INSERT OR IGNORE INTO users (id, username, created_at, balance_micros) VALUES (?, 'demo', ?, ?)",
            (DEMO_USER_ID, _now(), to_micros(balance)),
        )
        if bootstrap_key is not None:
            self.add_key(DEMO_USER_ID, bootstrap_key)
            return None
        if self._db.execute("SELECT 1 FROM api_keys WHERE user_id = ?", (DEMO_USER_ID,)).fetchone():
            return None
        key = generate_key()
        self.add_key(DEMO_USER_ID, key)
        return key

    def create_user(self, username: str, balance: float) -> int:
        """A new user holding `balance` credits; its id."""
        cursor = self._db.execute(
            "INSERT INTO users (username, created_at, balance_micros) VALUES (?, ?, ?)",
            (username, _now(), to_micros(balance)),
        )
        return int(cursor.lastrowid or 0)

    def add_key(self, user_id: int, key: str) -> None:
        """Let `key` act as `user_id` (idempotent)."""
        self._db.execute(
            "INSERT OR IGNORE INTO api_keys (key_hash, user_id, created_at) VALUES (?, ?, ?)",
            (hash_key(key), user_id, _now()),
        )

    def authenticate(self, key: str) -> int | None:
        """The user `key` belongs to; known keys are remembered, so repeat callers cost no query."""
        digest = hash_key(key)
        user_id = self._keys.get(digest)
        if user_id is not None:
            return user_id
        row = self._db.execute("SELECT user_id FROM api_keys WHERE key_hash = ?", (digest,)).fetchone()
        if row is None:
            return None
        if len(self._keys) >= _KEY_CACHE_SIZE:
            self._keys.clear()
        self._keys[digest] = int(row[0])
        return int(row[0])

    def user(self, user_id: int) -> User | None:
        """The public profile; None also for ids no SQLite INTEGER can hold."""
        if not _SQLITE_MIN_INT <= user_id <= _SQLITE_MAX_INT:
            return None  # no row can have this id, and sqlite3 raises OverflowError binding it
        row = self._db.execute(
            "SELECT id, username, created_at FROM users WHERE id = ?", (user_id,)
        ).fetchone()
        return User(*row) if row else None

    def balance(self, user_id: int) -> float:
        """Credits left (0 for no such user)."""
        self._write_refunds()
        row = self._db.execute("SELECT balance_micros FROM users WHERE id = ?", (user_id,)).fetchone()
        return to_credits(row[0]) if row else 0.0

    def usage(self, user_id: int) -> list[ModelUsage]:
        """Usage by model, most credits first."""
        self._write_usage()
        rows = self._db.execute(
            "SELECT model, requests, prompt_tokens, completion_tokens, credits_micros FROM usage "
            "WHERE user_id = ? ORDER BY credits_micros DESC, model",
            (user_id,),
        ).fetchall()
        return [
            ModelUsage(model, requests, prompt, completion, to_credits(micros))
            for model, requests, prompt, completion, micros in rows
        ]

    def reserve(self, user_id: int, micros: int) -> bool:
        """Hold `micros` against the balance in one conditional UPDATE; False when the balance is short."""
        self._begin()
        reserved = self._hold(user_id, micros)
        if not reserved and self._refunds.get(user_id):
            self._write_refunds()  # what is owed back may be what is missing
            reserved = self._hold(user_id, micros)
        self._commit_if_due()
        return reserved

    def _hold(self, user_id: int, micros: int) -> bool:
        cursor = self._db.execute(
            "UPDATE users SET balance_micros = balance_micros - ? WHERE id = ? AND balance_micros >= ?",
            (micros, user_id, micros),
        )
        return cursor.rowcount == 1

    def release(self, user_id: int, micros: int) -> None:
        """Give a reservation back whole (the call failed); written with the next commit."""
        self._refund(user_id, micros)
        self._commit_if_due()

    def _refund(self, user_id: int, micros: int) -> None:
        if micros > 0:
            self._refunds[user_id] = self._refunds.get(user_id, 0) + micros

    def settle(
        self,
        user_id: int,
        model: str,
        *,
        reserved: int,
        cost: int,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> int:
        """Turn a reservation into the actual `cost` and record usage; the micro-credits actually charged.

        A cost above the reservation (an upstream ignoring the token limit) is charged only as far as the
        balance goes: the balance never goes below zero.
        """
        self._begin()
        charged = cost
        if cost > reserved:
            self._write_refunds()  # the overrun is charged as far as the true balance goes
            row = self._db.execute("SELECT balance_micros FROM users WHERE id = ?", (user_id,)).fetchone()
            charged = reserved + min(cost - reserved, int(row[0]) if row else 0)
            if (
                charged > reserved
            ):  # a debit is written at once: deferring it could let a balance be overspent
                self._db.execute(
                    "UPDATE users SET balance_micros = balance_micros - ? WHERE id = ?",
                    (charged - reserved, user_id),
                )
        else:
            self._refund(user_id, reserved - charged)
        # Usage is summed in memory and written with the commit (or before it is read): one statement per
        # (user, model) per commit instead of one per request.
        totals = self._usage.get((user_id, model))
        if totals is None:
            self._usage[user_id, model] = [1, prompt_tokens, completion_tokens, charged]
        else:
            totals[0] += 1
            totals[1] += prompt_tokens
            totals[2] += completion_tokens
            totals[3] += charged
        self._commit_if_due()
        return charged

    def _begin(self) -> None:
        if not self._db.in_transaction:
            # IMMEDIATE takes the write lock now, so the conditional UPDATEs that follow see every commit.
            self._db.execute("BEGIN IMMEDIATE")
            self._began = self._clock()

    def _commit_if_due(self) -> None:
        if self._clock() - self._began >= self.flush_seconds:
            self.flush()

    def _write_usage(self) -> None:
        if not self._usage:
            return
        usage, self._usage = self._usage, {}
        self._begin()
        self._db.executemany(
            "INSERT INTO usage (user_id, model, requests, prompt_tokens, completion_tokens, credits_micros) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, model) DO UPDATE SET "
            "requests = requests + excluded.requests, "
            "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
            "completion_tokens = completion_tokens + excluded.completion_tokens, "
            "credits_micros = credits_micros + excluded.credits_micros",
            [(user_id, model, *totals) for (user_id, model), totals in usage.items()],
        )

    def _write_refunds(self) -> None:
        if not self._refunds:
            return
        refunds, self._refunds = self._refunds, {}
        self._begin()
        self._db.executemany(
            "UPDATE users SET balance_micros = balance_micros + ? WHERE id = ?",
            [(micros, user_id) for user_id, micros in refunds.items()],
        )

    def flush(self) -> None:
        """Write summed usage and refunds, and commit the open write transaction, if any."""
        self._write_usage()
        self._write_refunds()
        if self._db.in_transaction:
            self._db.execute("COMMIT")


class SqliteStore:
    """The `Store` contract over one `UserStore`: the same statements, awaited (they never block for long)."""

    engine: Engine = "sqlite"

    def __init__(self, core: UserStore, metrics: StoreMetrics) -> None:
        self.core = core
        self.maintenance_seconds = core.flush_seconds or FLUSH_SECONDS
        self._duration = metrics.duration

    @classmethod
    def open(cls, path: str, metrics: StoreMetrics, flush_seconds: float = FLUSH_SECONDS) -> SqliteStore:
        """Open (or create) the file at `path`."""
        return cls(UserStore.open(path, flush_seconds), metrics)

    async def ensure_demo_user(self, balance: float, bootstrap_key: str | None) -> str | None:
        """Create demo user 1 if missing; give it `bootstrap_key`, else a new key when it has none."""
        return self.core.ensure_demo_user(balance, bootstrap_key)

    async def create_user(self, username: str, balance: float) -> int:
        """A new user holding `balance` credits; its id."""
        return self.core.create_user(username, balance)

    async def add_key(self, user_id: int, key: str) -> None:
        """Let `key` act as `user_id` (idempotent)."""
        self.core.add_key(user_id, key)

    async def authenticate(self, key: str) -> int | None:
        """The user `key` belongs to (known keys are remembered in memory)."""
        return self.core.authenticate(key)

    async def user(self, user_id: int) -> User | None:
        """The public profile."""
        return self.core.user(user_id)

    async def balance(self, user_id: int) -> float:
        """Credits left, refunds not yet committed included."""
        return self.core.balance(user_id)

    async def usage(self, user_id: int) -> list[ModelUsage]:
        """Usage by model, most credits first."""
        return self.core.usage(user_id)

    async def reserve(self, user_id: int, micros: int) -> Hold | None:
        """One conditional UPDATE; None when the balance is short."""
        started = perf_counter()
        reserved = self.core.reserve(user_id, micros)
        self._duration["reserve"].observe(perf_counter() - started)
        return Hold(user_id, micros) if reserved else None

    async def release(self, hold: Hold) -> None:
        """Give the hold back whole, with the next commit."""
        self.core.release(hold.user_id, hold.micros)

    async def settle(
        self, hold: Hold, model: str, *, cost: int, prompt_tokens: int, completion_tokens: int
    ) -> int:
        """Charge `cost` against the hold and record usage; the micro-credits charged."""
        started = perf_counter()
        charged = self.core.settle(
            hold.user_id,
            model,
            reserved=hold.micros,
            cost=cost,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
        self._duration["settle"].observe(perf_counter() - started)
        return charged

    async def maintain(self) -> None:
        """Commit written-behind settlements even when no new request arrives to trigger it."""
        started = perf_counter()
        self.core.flush()
        self._duration["maintain"].observe(perf_counter() - started)

    async def close(self) -> None:
        """Commit what is pending and close the file."""
        self.core.close()
