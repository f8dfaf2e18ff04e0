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

import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Any

from gateway.store.contract import (
    BUDGET_PERIODS,
    DEMO_USER_ID,
    KEY_COLUMNS,
    AliasInUse,
    ApiKey,
    BudgetPeriod,
    Engine,
    Hold,
    KeyRecord,
    KeyRow,
    ModelUsage,
    User,
    budget_exceeded,
    default_alias,
    generate_key,
    hash_key,
    iso,
    key_expired,
    key_revoked,
    period_start,
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
# Keys as objects (alias, budget, limits, allow-list, expiry, revocation, spend). The table is rebuilt with an
# `id INTEGER PRIMARY KEY`: the implicit rowid it had may be renumbered by VACUUM, an alias of it never is.
_SCHEMA_V2 = """
CREATE TABLE api_keys_v2 (
    id INTEGER PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users(id),
    created_at TEXT NOT NULL,
    alias TEXT NOT NULL,
    budget_micros INTEGER CHECK (budget_micros >= 0),
    budget_period TEXT CHECK (budget_period IN ('daily', 'weekly', 'monthly')),
    rpm INTEGER CHECK (rpm > 0),
    tpm INTEGER CHECK (tpm > 0),
    models TEXT,
    expires_at TEXT,
    revoked_at TEXT,
    spend_micros INTEGER NOT NULL DEFAULT 0,
    period_start TEXT,
    last_used_at TEXT
);
INSERT INTO api_keys_v2 (id, key_hash, user_id, created_at, alias)
    SELECT rowid, key_hash, user_id, created_at, 'key-' || substr(key_hash, 1, 8) FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_v2 RENAME TO api_keys;
CREATE INDEX api_keys_user ON api_keys (user_id);
CREATE UNIQUE INDEX api_keys_active_alias ON api_keys (alias) WHERE revoked_at IS NULL;
"""
MIGRATIONS = (_SCHEMA_V1, _SCHEMA_V2)
"""Schema versions in order; `PRAGMA user_version` says how many a file has. Append, never edit one."""
_KEY_SELECT = (
    "SELECT id, user_id, alias, created_at, budget_micros, budget_period, rpm, tpm, models, expires_at, "
    "revoked_at, spend_micros, period_start, last_used_at FROM api_keys"
)
_BUDGET = (
    "SELECT budget_micros, budget_period, spend_micros, period_start, revoked_at, expires_at "
    "FROM api_keys WHERE id = ?"
)
# The start of the key's budget period now (:day, :week, :month are those of the current time).
_PERIOD = (
    "(CASE budget_period WHEN 'daily' THEN :day WHEN 'weekly' THEN :week WHEN 'monthly' THEN :month END)"
)
_ROLLED = f"(budget_period IS NOT NULL AND (period_start IS NULL OR period_start < {_PERIOD}))"
_WRITE_SPEND = (
    f"UPDATE api_keys SET spend_micros = CASE WHEN {_ROLLED} THEN :amount ELSE spend_micros + :amount END, "  # noqa: S608 - constants
    f"period_start = CASE WHEN {_ROLLED} THEN {_PERIOD} ELSE period_start END, last_used_at = :now "
    "WHERE id = :id"
)


def migrate(connection: sqlite3.Connection) -> int:
    """Apply the migrations the file lacks, each in its own write transaction; the resulting version."""
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        connection.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    return max(version, len(MIGRATIONS))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _key_row(row: tuple[Any, ...]) -> KeyRow:
    period: BudgetPeriod | None = row[5]
    return KeyRow(
        id=int(row[0]),
        user_id=int(row[1]),
        alias=str(row[2]),
        created_at=_parse(row[3]) or datetime.min.replace(tzinfo=UTC),
        budget_micros=row[4],
        budget_period=period if period in BUDGET_PERIODS else None,
        rpm=row[6],
        tpm=row[7],
        models=json.loads(row[8]) if row[8] is not None else None,
        expires_at=_parse(row[9]),
        revoked_at=_parse(row[10]),
        spend_micros=int(row[11]),
        period_start=_parse(row[12]),
        last_used_at=_parse(row[13]),
    )


def _column_value(column: str, value: object) -> object:
    """A `KEY_COLUMNS` value as SQLite stores it."""
    if value is None:
        return None
    if column == "models":
        return json.dumps(sorted(value))  # type: ignore[call-overload]
    if column == "expires_at":
        return iso(value)  # type: ignore[arg-type]
    return value


def _periods(now: datetime) -> dict[str, str]:
    """The `:day`, `:week`, `:month` parameters of `_PERIOD`."""
    return {
        "day": iso(period_start("daily", now)),
        "week": iso(period_start("weekly", now)),
        "month": iso(period_start("monthly", now)),
    }


class UserStore:
    """The SQLite store; one connection, used from the event loop (each statement takes microseconds)."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        flush_seconds: float = FLUSH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._db = connection
        self.flush_seconds = flush_seconds
        self._clock = clock
        self._wall = wall
        self._keys: dict[str, ApiKey] = {}
        """Keys seen, by hash. One process per file: a change made here is the only change there is."""
        self._key_hashes: dict[int, str] = {}
        self._revoked: set[int] = set()
        self._key_spend: dict[int, int] = {}
        """Spend by key since the last commit (written with it, like usage); keys used for 0 too."""
        self._key_held: dict[int, int] = {}
        """Reservations in flight against each budgeted key: in memory, as none outlives the process."""
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
            "INSERT OR IGNORE INTO api_keys (key_hash, user_id, created_at, alias) VALUES (?, ?, ?, ?)",
            (hash_key(key), user_id, _now(), default_alias(key)),
        )

    def authenticate(self, key: str) -> int | None:
        """The user a valid (not revoked, not expired) `key` belongs to."""
        found = self.lookup(key)
        if found is None or found.revoked:
            return None
        if found.expires_at is not None and found.expired(self._wall().timestamp()):
            return None
        return found.user_id

    def lookup(self, key: str) -> ApiKey | None:
        """The key and its limits; known keys are remembered, so repeat callers cost no query."""
        digest = hash_key(key)
        found = self._keys.get(digest)
        if found is not None:
            return found
        row = self._db.execute(f"{_KEY_SELECT} WHERE key_hash = ?", (digest,)).fetchone()
        if row is None:
            return None
        if len(self._keys) >= _KEY_CACHE_SIZE:
            self._keys.clear()
            self._key_hashes.clear()
        found = _key_row(row).api_key()
        self._keys[digest] = found
        self._key_hashes[found.id] = digest
        return found

    def _forget(self, key_id: int) -> None:
        digest = self._key_hashes.pop(key_id, None)
        if digest is not None:
            self._keys.pop(digest, None)

    def _row(self, key_id: int) -> KeyRow | None:
        if not _SQLITE_MIN_INT <= key_id <= _SQLITE_MAX_INT:
            return None
        row = self._db.execute(f"{_KEY_SELECT} WHERE id = ?", (key_id,)).fetchone()
        return _key_row(row) if row is not None else None

    def _record(self, row: KeyRow) -> KeyRecord:
        return row.record(self._wall())

    def create_key(self, user_id: int, key: str, fields: Mapping[str, object]) -> KeyRecord:
        """Insert a key with its alias and limits and commit at once (it is handed out right away)."""
        columns = {name: _column_value(name, value) for name, value in fields.items() if name in KEY_COLUMNS}
        if columns.get("budget_period") is not None:
            columns["period_start"] = iso(period_start(columns["budget_period"], self._wall()))  # type: ignore[arg-type]
        names = ["key_hash", "user_id", "created_at", *columns]
        self._begin()
        try:
            cursor = self._db.execute(
                f"INSERT INTO api_keys ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",  # noqa: S608 - names from KEY_COLUMNS
                (hash_key(key), user_id, _now(), *columns.values()),
            )
        except sqlite3.IntegrityError as exc:
            self.flush()
            raise AliasInUse(str(fields.get("alias"))) from exc
        self.flush()
        row = self._row(int(cursor.lastrowid or 0))
        assert row is not None  # noqa: S101 - just inserted
        return self._record(row)

    def keys(self, user_id: int | None, limit: int, offset: int) -> list[KeyRecord]:
        """Keys by id, of one user when given (spend not yet committed written first)."""
        self._write_key_spend()
        if user_id is None:
            rows = self._db.execute(f"{_KEY_SELECT} ORDER BY id LIMIT ? OFFSET ?", (limit, offset))
        elif not _SQLITE_MIN_INT <= user_id <= _SQLITE_MAX_INT:
            return []
        else:
            rows = self._db.execute(
                f"{_KEY_SELECT} WHERE user_id = ? ORDER BY id LIMIT ? OFFSET ?", (user_id, limit, offset)
            )
        return [self._record(_key_row(row)) for row in rows.fetchall()]

    def key(self, key_id: int) -> KeyRecord | None:
        """One key (spend not yet committed written first)."""
        self._write_key_spend()
        row = self._row(key_id)
        return self._record(row) if row is not None else None

    def update_key(self, key_id: int, fields: Mapping[str, object]) -> KeyRecord | None:
        """Change a key's alias or limits, committed at once; the next request uses them."""
        row = self._row(key_id)
        if row is None:
            return None
        columns = {name: _column_value(name, value) for name, value in fields.items() if name in KEY_COLUMNS}
        period = columns.get("budget_period")
        if period is not None and period != row.budget_period:
            # The spend so far counts in the period that begins now.
            columns["period_start"] = iso(period_start(period, self._wall()))  # type: ignore[arg-type]
            columns["spend_micros"] = row.spend(self._wall()) + self._key_spend.pop(key_id, 0)
        if columns:
            self._begin()
            try:
                self._db.execute(
                    f"UPDATE api_keys SET {', '.join(f'{name} = ?' for name in columns)} WHERE id = ?",  # noqa: S608 - names from KEY_COLUMNS
                    (*columns.values(), key_id),
                )
            except sqlite3.IntegrityError as exc:
                self.flush()
                raise AliasInUse(str(fields.get("alias"))) from exc
            self.flush()
        self._forget(key_id)
        return self.key(key_id)

    def revoke_key(self, key_id: int) -> KeyRecord | None:
        """Mark the key revoked (the first time only), committed at once; refused from now on."""
        if self._row(key_id) is None:
            return None
        self._begin()
        self._db.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (_now(), key_id)
        )
        self.flush()
        self._revoked.add(key_id)
        self._forget(key_id)
        return self.key(key_id)

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

    def reserve(self, user_id: int, micros: int, key: ApiKey | None = None) -> bool:
        """Hold `micros` against the balance in one conditional UPDATE; False when the balance is short.

        With a budgeted `key`, its spend (the period's, plus what is not yet written and what is held) must
        leave room for `micros` too, else `KeyRefused`; so must a key revoked or expired meanwhile.
        """
        budgeted = key is not None and key.budget_micros is not None
        if key is not None:
            self._check_key(key, micros, budgeted=budgeted)
        self._begin()
        reserved = self._hold(user_id, micros)
        if not reserved and self._refunds.get(user_id):
            self._write_refunds()  # what is owed back may be what is missing
            reserved = self._hold(user_id, micros)
        if reserved and key is not None and budgeted:
            self._key_held[key.id] = self._key_held.get(key.id, 0) + micros
        self._commit_if_due()
        return reserved

    def _check_key(self, key: ApiKey, micros: int, *, budgeted: bool) -> None:
        if key.id in self._revoked:
            raise key_revoked()
        # Most keys never expire: the clock (a datetime) is read only for one that does.
        if key.expires_at is not None and key.expired(self._wall().timestamp()):
            raise key_expired()
        if not budgeted:
            return
        row = self._db.execute(_BUDGET, (key.id,)).fetchone()
        if row is None or row[4] is not None:
            raise key_revoked()
        budget, period, spent, started, _, expires = row
        now = self._wall()
        stamp = iso(now)  # the file's times are this format, so they compare as text
        if expires is not None and expires <= stamp:
            raise key_expired()
        if budget is None:
            return
        if period is not None and (started is None or started < iso(period_start(period, now))):
            spent = 0  # the period is over
        spent += self._key_spend.get(key.id, 0) + self._key_held.get(key.id, 0)
        if spent + micros > budget:
            raise budget_exceeded(key.alias, micros)

    def _key_settled(self, key_id: int, held: int, charged: int) -> None:
        """A hold of `key_id` ended: it no longer counts against the budget, what it charged is spent."""
        if held:
            left = self._key_held.get(key_id, 0) - held
            if left > 0:
                self._key_held[key_id] = left
            else:
                self._key_held.pop(key_id, None)
        self._key_spend[key_id] = self._key_spend.get(key_id, 0) + charged

    def _hold(self, user_id: int, micros: int) -> bool:
        cursor = self._db.execute(
            "UPDATE users SET balance_micros = balance_micros - ? WHERE id = ? AND balance_micros >= ?",
            (micros, user_id, micros),
        )
        return cursor.rowcount == 1

    def release(self, user_id: int, micros: int, key_id: int = 0, *, key_held: bool = False) -> None:
        """Give a reservation back whole (the call failed); written with the next commit."""
        self._refund(user_id, micros)
        if key_id:
            self._key_settled(key_id, micros if key_held else 0, 0)
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
        key_id: int = 0,
        key_held: bool = False,
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
        if key_id:
            self._key_settled(key_id, reserved if key_held else 0, charged)
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

    def _write_key_spend(self) -> None:
        if not self._key_spend:
            return
        spend, self._key_spend = self._key_spend, {}
        now = self._wall()
        common = {**_periods(now), "now": iso(now)}
        self._begin()
        self._db.executemany(
            _WRITE_SPEND, [{**common, "id": key_id, "amount": amount} for key_id, amount in spend.items()]
        )

    def flush(self) -> None:
        """Write summed usage, refunds and key spend, and commit the open write transaction, if any."""
        self._write_usage()
        self._write_refunds()
        self._write_key_spend()
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
        """The user a valid `key` belongs to (known keys are remembered in memory)."""
        return self.core.authenticate(key)

    async def lookup(self, key: str) -> ApiKey | None:
        """The key and its limits (remembered in memory)."""
        return self.core.lookup(key)

    async def create_key(self, user_id: int, key: str, fields: Mapping[str, object]) -> KeyRecord:
        """A new key, committed at once."""
        return self.core.create_key(user_id, key, fields)

    async def keys(self, user_id: int | None, limit: int, offset: int) -> list[KeyRecord]:
        """Keys by id."""
        return self.core.keys(user_id, limit, offset)

    async def key(self, key_id: int) -> KeyRecord | None:
        """One key."""
        return self.core.key(key_id)

    async def update_key(self, key_id: int, fields: Mapping[str, object]) -> KeyRecord | None:
        """Change a key's alias or limits, committed at once."""
        return self.core.update_key(key_id, fields)

    async def revoke_key(self, key_id: int) -> KeyRecord | None:
        """Revoke a key, committed at once."""
        return self.core.revoke_key(key_id)

    async def user(self, user_id: int) -> User | None:
        """The public profile."""
        return self.core.user(user_id)

    async def balance(self, user_id: int) -> float:
        """Credits left, refunds not yet committed included."""
        return self.core.balance(user_id)

    async def usage(self, user_id: int) -> list[ModelUsage]:
        """Usage by model, most credits first."""
        return self.core.usage(user_id)

    async def reserve(self, user_id: int, micros: int, key: ApiKey | None = None) -> Hold | None:
        """One conditional UPDATE (and the key's budget checked); None when the balance is short."""
        started = perf_counter()
        try:
            reserved = self.core.reserve(user_id, micros, key)
        finally:
            self._duration["reserve"].observe(perf_counter() - started)
        if not reserved:
            return None
        if key is None:
            return Hold(user_id, micros)
        return Hold(user_id, micros, key_id=key.id, key_held=key.budget_micros is not None)

    async def release(self, hold: Hold) -> None:
        """Give the hold back whole, with the next commit."""
        self.core.release(hold.user_id, hold.micros, hold.key_id, key_held=hold.key_held)

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
            key_id=hold.key_id,
            key_held=hold.key_held,
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
