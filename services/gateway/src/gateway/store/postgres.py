"""The scaled-out engine: the `Store` contract in PostgreSQL (`DATABASE_URL`), shared by every replica.

Driver: asyncpg with its own pool, chosen by measurement. On this very path — one reservation call and one
settlement call per request, 16 requests in flight, the client pinned to one core, the same SQL functions
(`bench/store_drivers.py`; BENCHMARKS.md, "Store drivers") — psycopg 3 (`psycopg[binary]` with
`psycopg_pool`, server-side prepared) cost 2.8x asyncpg's client CPU per request (1,142 µs against 409 µs,
median of 3 rounds) and served 2.5x fewer requests per second, in every round. Client CPU is what a gateway
process pays. psycopg's own strengths (libpq compatibility, pgbouncer's transaction pooling) do not apply: the
gateway talks to PostgreSQL directly. asyncpg's pool runs a reset query on every release by default (one more
round trip per statement); the store replaces it (`_keep_session`). With the `Batcher` group commit the
store itself costs 88 µs per request there, 0.22 of asyncpg alone.

Money:
- A reservation is one conditional `UPDATE users ... WHERE balance_micros >= amount` and the `holds` row
  recording it, in one transaction. However many replicas race, the balance never goes below zero (the row
  lock serialises the UPDATEs; each re-checks the condition on the latest balance).
- A settlement or release is one call of `gatewayz.settle_one()` per hold: delete the hold, charge, refund the
  rest, record usage. A hold that is already gone changes nothing, so a settlement retried after an
  ambiguous failure cannot charge twice.
- Both go through a `Batcher` (group commit): one call in flight per kind, whatever arrives meanwhile goes in
  the next call (`gatewayz.reserve()` / `gatewayz.settle()` take arrays, lock users rows in id order so
  batches of different replicas cannot deadlock). Alone, a request costs one round trip for each; under
  load the round trips are shared.
- A replica renews the holds of its requests still running (every tick, those older than a third of
  `hold_seconds`), so a hold only expires when its replica stopped renewing it: killed, or cut off from the
  database. Every replica returns expired holds every tick. A killed replica's money is back within
  `hold_seconds` + one tick.
- A settlement the database cannot take now is queued in memory (bounded) and written, in order, when it
  answers again; the client got its answer, its hold keeps the money reserved meanwhile.

Keys:
- Each replica remembers the keys it has seen (limits included), so an authenticated request costs no query.
  A change or revocation is `NOTIFY gatewayz_keys, '<id>'` in the same transaction; every replica LISTENs on
  its own connection and forgets that key when the notification arrives (measured: a revoked key is refused
  by the other replica within milliseconds, tests/integration/test_keys.py). The reservation checks the key in
  the database as well (revoked, expired, budget), so no request is charged on a revoked key even in that gap.
- While the LISTEN connection is down (reconnected every tick), remembered keys are not trusted: each lookup
  asks the database, and falls back to memory only when the database cannot be reached (then nobody can
  revoke a key either, except from a replica on the other side of a partition). Back listening, the memory
  is emptied (notifications may have been missed).
- A budgeted key's reservations count against its budget (`held_micros`) until settled; settling adds the
  charge to its spend in the current period (daily / weekly / monthly reset at UTC boundaries).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from typing import Any, Final

import asyncpg
from loguru import logger
from prometheus_client import Gauge

from gateway.store.batching import Batcher
from gateway.store.contract import (
    BUDGET_PERIODS,
    DEMO_USER_ID,
    KEY_COLUMNS,
    AliasInUse,
    ApiKey,
    Engine,
    Hold,
    KeyRecord,
    KeyRow,
    ModelUsage,
    StoreConfigurationError,
    StoreUnavailable,
    User,
    budget_exceeded,
    default_alias,
    generate_key,
    hash_key,
    key_expired,
    key_revoked,
    to_credits,
    to_micros,
)
from gateway.store.metrics import Operation, StoreMetrics
from gateway.store.postgres_schema import KEY_CHANNEL, MIGRATION_LOCK, MIGRATIONS, SCHEMA
from telemetry.throttle import LogThrottle

UNAVAILABLE: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.OperatorInterventionError,  # admin shutdown, cannot connect now, statement timeout
    asyncpg.InsufficientResourcesError,  # too many connections
)
"""What means "the database cannot be reached right now" (anything else is a bug and surfaces as one)."""
MISCONFIGURED: Final = (
    asyncpg.InvalidAuthorizationSpecificationError,  # unknown role, password authentication failed
    asyncpg.InvalidCatalogNameError,  # no such database
    asyncpg.InsufficientPrivilegeError,
)
_KEY_CACHE_SIZE = 10_000
_RETRIES = 3
"""Tries of a batch that hit a deadlock or a hold-id clash (rolled back whole, so safe to send again)."""
_MAX_PENDING = 100_000
_REAP_BATCH = 1_000
_CLOSE_SECONDS = 3.0
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1
_ISO = """to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""

_RESERVE = f"SELECT {SCHEMA}.reserve($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5, $6)"
_GRANTED, _SHORT, _OVER_BUDGET, _REVOKED, _EXPIRED = 0, 1, 2, 3, 4
"""`gatewayz.reserve()`'s outcomes."""
_SETTLE = (
    f"SELECT {SCHEMA}.settle("
    "$1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[])"
)
_RENEW = (
    f"UPDATE {SCHEMA}.holds SET expires_at = now() + make_interval(secs => $2) WHERE id = ANY($1::bigint[])"
)
_REAP = f"SELECT returned_holds, returned_micros, owners FROM {SCHEMA}.return_expired_holds($1)"
_KEY_COLUMNS = (
    "id, user_id, alias, created_at, budget_micros, budget_period, rpm, tpm, models, expires_at, revoked_at, "
    "spend_micros, period_start, last_used_at"
)
_KEY_SELECT = f"SELECT {_KEY_COLUMNS} FROM {SCHEMA}.api_keys"
_KEY_BY_HASH = f"{_KEY_SELECT} WHERE key_hash = $1"
_KEY_BY_ID = f"{_KEY_SELECT} WHERE id = $1"
_USER = f"SELECT id, username, {_ISO} FROM {SCHEMA}.users WHERE id = $1"
_BALANCE = f"SELECT balance_micros FROM {SCHEMA}.users WHERE id = $1"
_USAGE = f"""
SELECT model, requests, prompt_tokens, completion_tokens, credits_micros FROM {SCHEMA}.usage
WHERE user_id = $1 ORDER BY credits_micros DESC, model
"""
_ADD_KEY = (
    f"INSERT INTO {SCHEMA}.api_keys (key_hash, user_id, alias) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
)
_REVOKE = (
    f"UPDATE {SCHEMA}.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 "
    f"RETURNING {_KEY_COLUMNS}"
)
_NOTIFY = "SELECT pg_notify($1, $2)"
_PERIOD_OVER = f"{SCHEMA}.period_over(budget_period, period_start, now())"


def _key_row(row: asyncpg.Record) -> KeyRow:
    period = row["budget_period"]
    return KeyRow(
        id=int(row["id"]),
        user_id=int(row["user_id"]),
        alias=str(row["alias"]),
        created_at=row["created_at"],
        budget_micros=row["budget_micros"],
        budget_period=period if period in BUDGET_PERIODS else None,
        rpm=row["rpm"],
        tpm=row["tpm"],
        models=list(row["models"]) if row["models"] is not None else None,
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        spend_micros=int(row["spend_micros"]),
        period_start=row["period_start"],
        last_used_at=row["last_used_at"],
    )


@dataclass(frozen=True, slots=True)
class _Settlement:
    """A settlement (or, with `model` None, a release) waiting for the database."""

    hold: Hold
    cost: int
    model: str | None
    prompt_tokens: int
    completion_tokens: int


def replica_name() -> str:
    """How this process signs its holds: host, pid and a random suffix (pids repeat across containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class PostgresStore:
    """The `Store` contract over an asyncpg pool; see the module docstring for how money is kept."""

    engine: Engine = "postgresql"

    def __init__(
        self,
        pool: asyncpg.Pool,
        metrics: StoreMetrics,
        *,
        hold_seconds: float,
        replica: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        url: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._pool = pool
        self._url = url
        self._timeout = timeout
        self._listener: asyncpg.Connection | None = None
        self._metrics = metrics
        self.hold_seconds = hold_seconds
        self.maintenance_seconds = min(1.0, hold_seconds / 6)
        self.replica = replica or replica_name()
        self._clock = clock
        self._keys: dict[str, ApiKey] = {}
        self._key_hashes: dict[int, str] = {}
        self._held: dict[int, float] = {}
        """Holds of this replica's running requests (and of queued settlements) → when last renewed."""
        self._pending: deque[_Settlement] = deque()
        self._healthy_ticks = 0
        self._log = LogThrottle(10.0)
        self._reservations: Batcher[tuple[int, int, int | None], tuple[int, int]] = Batcher(
            self._send_reservations, abandoned=self._abandoned_reservation
        )
        self._settlements: Batcher[_Settlement, int | None] = Batcher(self._send_settlements)
        pool_gauge = Gauge(
            "gateway_store_pool_connections",
            "PostgreSQL connections of this replica's pool, by state (in_use, idle).",
            ["state"],
            registry=metrics.registry,
        )
        pool_gauge.labels("idle").set_function(lambda: float(pool.get_idle_size()))
        pool_gauge.labels("in_use").set_function(lambda: float(pool.get_size() - pool.get_idle_size()))

    @classmethod
    async def open(
        cls,
        url: str,
        metrics: StoreMetrics,
        *,
        pool_size: int = 10,
        hold_seconds: float = 30.0,
        timeout: float = 5.0,  # noqa: ASYNC109 - asyncpg's connect and statement bound, not a wrapper's
        wait_seconds: float = 30.0,
        synchronous_commit: bool = False,
    ) -> PostgresStore:
        """Connect (waiting up to `wait_seconds` for the server), migrate the schema, and return the store.

        Raises `StoreConfigurationError` for a database that refuses us for good, `StoreUnavailable` when it
        never answered.

        `synchronous_commit` off (our sessions only) answers a commit before its WAL is on disk: a crash of
        the database server can lose its last few hundred milliseconds of commits, never corrupt them. Every
        loss is in the user's favour — a lost reservation takes its hold with it, a lost settlement leaves a
        hold that is returned whole once it expires — and it saves a disk flush per round trip.
        """
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                pool = await asyncpg.create_pool(
                    url,
                    min_size=1,
                    max_size=pool_size,
                    timeout=timeout,
                    command_timeout=timeout,
                    max_inactive_connection_lifetime=300.0,
                    server_settings={
                        "application_name": "gatewayz-gateway",
                        "synchronous_commit": "on" if synchronous_commit else "off",
                    },
                    reset=_keep_session,
                )
                break
            except MISCONFIGURED as exc:
                raise StoreConfigurationError(str(exc)) from None
            except UNAVAILABLE as exc:
                if time.monotonic() >= deadline:
                    raise StoreUnavailable("connect") from exc
                logger.warning("Waiting for PostgreSQL", error=_describe(exc))
                await asyncio.sleep(1.0)
        try:
            await migrate(pool)
        except MISCONFIGURED as exc:
            await pool.close()
            raise StoreConfigurationError(str(exc)) from None
        store = cls(pool, metrics, hold_seconds=hold_seconds, url=url, timeout=timeout)
        await store.listen()
        return store

    # -- calls ----------------------------------------------------------------------------------------------

    async def _call(self, operation: Operation, method: str, query: str, *args: object) -> Any:  # noqa: ANN401
        """Run one statement on a pooled connection, timed; an unreachable database is `StoreUnavailable`."""
        started = perf_counter()
        try:
            result = await getattr(self._pool, method)(query, *args)
        except UNAVAILABLE as exc:
            self._metrics.errors[operation].inc()
            self._log.warning("postgres", "PostgreSQL unavailable", operation=operation, error=_describe(exc))
            raise StoreUnavailable(operation) from exc
        finally:
            self._metrics.duration[operation].observe(perf_counter() - started)
        self._log.recovered("postgres", "PostgreSQL reachable again", operation=operation)
        return result

    # -- users and keys -------------------------------------------------------------------------------------

    async def ensure_demo_user(self, balance: float, bootstrap_key: str | None) -> str | None:
        """Create demo user 1 once, however many replicas start together (they queue on one lock)."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await connection.execute(
                f"INSERT INTO {SCHEMA}.users (id, username, balance_micros) VALUES ($1, 'demo', $2) "
                "ON CONFLICT DO NOTHING",
                DEMO_USER_ID,
                to_micros(balance),
            )
            if bootstrap_key is not None:
                await connection.execute(
                    _ADD_KEY, hash_key(bootstrap_key), DEMO_USER_ID, default_alias(bootstrap_key)
                )
                return None
            if await connection.fetchval(
                f"SELECT 1 FROM {SCHEMA}.api_keys WHERE user_id = $1 LIMIT 1", DEMO_USER_ID
            ):
                return None
            key = generate_key()
            await connection.execute(_ADD_KEY, hash_key(key), DEMO_USER_ID, default_alias(key))
            return key

    async def create_user(self, username: str, balance: float) -> int:
        """A new user holding `balance` credits; its id."""
        user_id = await self._call(
            "read",
            "fetchval",
            f"INSERT INTO {SCHEMA}.users (username, balance_micros) VALUES ($1, $2) RETURNING id",
            username,
            to_micros(balance),
        )
        return int(user_id)

    async def add_key(self, user_id: int, key: str) -> None:
        """Let `key` act as `user_id` (idempotent)."""
        await self._call("read", "execute", _ADD_KEY, hash_key(key), user_id, default_alias(key))

    async def authenticate(self, key: str) -> int | None:
        """The user a valid (not revoked, not expired) `key` belongs to."""
        found = await self.lookup(key)
        if found is None or found.revoked or found.expired(time.time()):
            return None
        return found.user_id

    async def lookup(self, key: str) -> ApiKey | None:
        """The key and its limits; remembered while this replica listens for key changes (see above)."""
        digest = hash_key(key)
        found = self._keys.get(digest)
        if found is not None and self._listener is not None and not self._listener.is_closed():
            return found
        try:
            row = await self._call("authenticate", "fetchrow", _KEY_BY_HASH, digest)
        except StoreUnavailable:
            if found is not None:  # the database is down: nobody can change the key meanwhile
                return found
            raise
        if row is None:
            return None
        if len(self._keys) >= _KEY_CACHE_SIZE:
            self._forget_all()
        found = _key_row(row).api_key()
        self._keys[digest] = found
        self._key_hashes[found.id] = digest
        return found

    def _forget(self, key_id: int) -> None:
        digest = self._key_hashes.pop(key_id, None)
        if digest is not None:
            self._keys.pop(digest, None)

    def _forget_all(self) -> None:
        self._keys.clear()
        self._key_hashes.clear()

    async def listen(self) -> bool:
        """Open the LISTEN connection for key changes (at start, and every tick while it is down)."""
        if self._listener is not None and self._listener.is_closed():
            self._listener = None
        if self._url is None or self._listener is not None:
            return self._listener is not None
        try:
            connection = await asyncpg.connect(
                self._url,
                timeout=self._timeout,
                server_settings={"application_name": "gatewayz-gateway-keys"},
            )
            await connection.add_listener(KEY_CHANNEL, self._key_changed)
        except UNAVAILABLE as exc:
            self._log.warning("postgres-listen", "Cannot listen for key changes", error=_describe(exc))
            return False
        connection.add_termination_listener(self._listener_lost)
        self._forget_all()  # changes made while nobody listened were not heard
        self._listener = connection
        self._log.recovered("postgres-listen", "Listening for key changes again")
        return True

    def _key_changed(self, _connection: object, _pid: int, _channel: str, payload: object) -> None:
        self._forget(int(str(payload)))

    def _listener_lost(self, _connection: object) -> None:
        self._listener = None

    async def create_key(self, user_id: int, key: str, fields: Mapping[str, object]) -> KeyRecord:
        """Insert a key with its alias and limits; `AliasInUse` when another live key has the alias."""
        columns = {name: value for name, value in fields.items() if name in KEY_COLUMNS}
        names = ["key_hash", "user_id", *columns]
        values = [f"${index}" for index in range(1, len(names) + 1)]
        if columns.get("budget_period") is not None:
            names.append("period_start")
            values.append(f"{SCHEMA}.period_start(${names.index('budget_period') + 1}, now())")
        query = (
            f"INSERT INTO {SCHEMA}.api_keys ({', '.join(names)}) VALUES ({', '.join(values)}) "
            f"RETURNING {_KEY_COLUMNS}"
        )
        try:
            row = await self._call("keys", "fetchrow", query, hash_key(key), user_id, *columns.values())
        except asyncpg.UniqueViolationError as exc:
            raise AliasInUse(str(fields.get("alias"))) from exc
        return _key_row(row).record(datetime.now(UTC))

    async def keys(self, user_id: int | None, limit: int, offset: int) -> list[KeyRecord]:
        """Keys by id, of one user when given."""
        if user_id is None:
            rows = await self._call(
                "keys", "fetch", f"{_KEY_SELECT} ORDER BY id LIMIT $1 OFFSET $2", limit, offset
            )
        elif not _BIGINT_MIN <= user_id <= _BIGINT_MAX:
            return []
        else:
            rows = await self._call(
                "keys",
                "fetch",
                f"{_KEY_SELECT} WHERE user_id = $1 ORDER BY id LIMIT $2 OFFSET $3",
                user_id,
                limit,
                offset,
            )
        now = datetime.now(UTC)
        return [_key_row(row).record(now) for row in rows]

    async def key(self, key_id: int) -> KeyRecord | None:
        """One key."""
        if not _BIGINT_MIN <= key_id <= _BIGINT_MAX:
            return None
        row = await self._call("keys", "fetchrow", _KEY_BY_ID, key_id)
        return _key_row(row).record(datetime.now(UTC)) if row is not None else None

    async def update_key(self, key_id: int, fields: Mapping[str, object]) -> KeyRecord | None:
        """Change a key's alias or limits and notify every replica, in one transaction."""
        if not _BIGINT_MIN <= key_id <= _BIGINT_MAX:
            return None
        columns = {name: value for name, value in fields.items() if name in KEY_COLUMNS}
        if not columns:
            return await self.key(key_id)
        assignments = [f"{name} = ${index}" for index, name in enumerate(columns, start=2)]
        if "budget_period" in columns:
            # A new period starts now, counting what was spent in the current one.
            at = list(columns).index("budget_period") + 2
            changed = f"${at}::text IS DISTINCT FROM budget_period"
            new_start = f"{SCHEMA}.period_start(${at}, now())"
            assignments += [
                f"period_start = CASE WHEN {changed} THEN {new_start} ELSE period_start END",
                f"spend_micros = CASE WHEN {changed} AND {_PERIOD_OVER} THEN 0 ELSE spend_micros END",
            ]
        query = (
            f"UPDATE {SCHEMA}.api_keys SET {', '.join(assignments)} WHERE id = $1 RETURNING {_KEY_COLUMNS}"
        )
        try:
            row = await self._write_key(query, key_id, *columns.values())
        except asyncpg.UniqueViolationError as exc:
            raise AliasInUse(str(fields.get("alias"))) from exc
        return _key_row(row).record(datetime.now(UTC)) if row is not None else None

    async def revoke_key(self, key_id: int) -> KeyRecord | None:
        """Revoke the key (the first time only) and notify every replica, in one transaction."""
        if not _BIGINT_MIN <= key_id <= _BIGINT_MAX:
            return None
        row = await self._write_key(_REVOKE, key_id)
        return _key_row(row).record(datetime.now(UTC)) if row is not None else None

    async def _write_key(self, query: str, key_id: int, *args: object) -> asyncpg.Record | None:
        """One key change and its NOTIFY, committed together; this replica forgets the key at once."""
        started = perf_counter()
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                row = await connection.fetchrow(query, key_id, *args)
                if row is not None:
                    await connection.execute(_NOTIFY, KEY_CHANNEL, str(key_id))
        except UNAVAILABLE as exc:
            self._metrics.errors["keys"].inc()
            raise StoreUnavailable("keys") from exc
        finally:
            self._metrics.duration["keys"].observe(perf_counter() - started)
        self._forget(key_id)
        return row

    async def user(self, user_id: int) -> User | None:
        """The public profile; None also for ids no BIGINT can hold."""
        if not _BIGINT_MIN <= user_id <= _BIGINT_MAX:
            return None
        row = await self._call("read", "fetchrow", _USER, user_id)
        return User(int(row[0]), str(row[1]), str(row[2])) if row else None

    async def balance(self, user_id: int) -> float:
        """Credits left (0 for no such user); holds in flight are not part of it."""
        micros = await self._call("read", "fetchval", _BALANCE, user_id)
        return to_credits(int(micros)) if micros is not None else 0.0

    async def usage(self, user_id: int) -> list[ModelUsage]:
        """Usage by model, most credits first."""
        rows = await self._call("read", "fetch", _USAGE, user_id)
        return [ModelUsage(str(r[0]), int(r[1]), int(r[2]), int(r[3]), to_credits(int(r[4]))) for r in rows]

    # -- money ----------------------------------------------------------------------------------------------

    async def reserve(self, user_id: int, micros: int, key: ApiKey | None = None) -> Hold | None:
        """Take `micros` from the balance (and the key's budget) if they cover them, and record the hold.

        None when the balance is short; `KeyRefused` when the key's budget is, or the key was revoked or
        expired (then this replica forgets it, so the next lookup reads the change).
        """
        key_id = key.id if key is not None else None
        hold_id, outcome = await self._reservations.submit((user_id, micros, key_id))
        if outcome == _GRANTED:
            return Hold(user_id, micros, hold_id, key_id=key_id or 0)
        if outcome == _SHORT or key is None:
            return None
        self._forget(key.id)
        if outcome == _OVER_BUDGET:
            raise budget_exceeded(key.alias, micros)
        raise key_expired() if outcome == _EXPIRED else key_revoked()

    async def _send_reservations(self, batch: list[tuple[int, int, int | None]]) -> list[tuple[int, int]]:
        for attempt in range(_RETRIES):
            holds = [secrets.randbits(63) for _ in batch]
            try:
                outcomes = await self._call(
                    "reserve",
                    "fetchval",
                    _RESERVE,
                    holds,
                    [user_id for user_id, _, _ in batch],
                    [micros for _, micros, _ in batch],
                    [key_id for _, _, key_id in batch],
                    self.replica,
                    self.hold_seconds,
                )
            except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
                # A hold id clashed with one in flight (1 in 2**63) or a deadlock rolled the batch back.
                if attempt == _RETRIES - 1:
                    raise
                continue
            now = self._clock()
            for hold_id, outcome in zip(holds, outcomes, strict=True):
                if outcome == _GRANTED:
                    self._held[hold_id] = now
            return [(hold_id, int(outcome)) for hold_id, outcome in zip(holds, outcomes, strict=True)]
        raise AssertionError("unreachable")  # pragma: no cover

    def _abandoned_reservation(self, item: tuple[int, int, int | None], result: tuple[int, int]) -> None:
        """The request was cancelled while its reservation was out: give a granted one back."""
        hold_id, outcome = result
        if outcome == _GRANTED:
            self._queue(_Settlement(Hold(item[0], item[1], hold_id, key_id=item[2] or 0), 0, None, 0, 0))

    async def release(self, hold: Hold) -> None:
        """Give the hold back whole (queued if the database is unreachable)."""
        await self._write(_Settlement(hold, 0, None, 0, 0))

    async def settle(
        self, hold: Hold, model: str, *, cost: int, prompt_tokens: int, completion_tokens: int
    ) -> int:
        """Charge `cost`, refund the rest, record usage; the micro-credits charged.

        When the database cannot take it now the settlement is queued and the charge reported is the one it
        will make (the cost, up to the hold).
        """
        written = await self._write(_Settlement(hold, cost, model, prompt_tokens, completion_tokens))
        return written if written is not None else min(cost, hold.micros)

    async def _write(self, settlement: _Settlement) -> int | None:
        if self._pending:  # keep the order: what waits goes first
            self._queue(settlement)
            return None
        try:
            return await self._settlements.submit(settlement)
        except StoreUnavailable:
            self._queue(settlement)
            return None

    async def _send_settlements(self, batch: list[_Settlement]) -> list[int | None]:
        operation: Operation = "settle" if any(item.model is not None for item in batch) else "release"
        for attempt in range(_RETRIES):
            try:
                charged = await self._call(
                    operation,
                    "fetchval",
                    _SETTLE,
                    [item.hold.id for item in batch],
                    [item.hold.user_id for item in batch],
                    [item.cost for item in batch],
                    [item.model for item in batch],
                    [item.prompt_tokens for item in batch],
                    [item.completion_tokens for item in batch],
                )
                break
            except asyncpg.DeadlockDetectedError:
                if attempt == _RETRIES - 1:
                    raise
        results: list[int | None] = []
        for item, amount in zip(batch, charged, strict=True):
            self._held.pop(item.hold.id, None)
            if amount is None:
                # Gone: returned as expired (this replica could not renew it in time), or settled by an
                # earlier attempt whose answer was lost. Either way nothing more is charged.
                logger.warning(
                    "Hold already gone at settlement (returned as expired, or settled by an earlier "
                    "attempt); nothing more charged",
                    user_id=item.hold.user_id,
                    credits=to_credits(item.cost),
                )
                results.append(0 if item.model is not None else None)
            else:
                results.append(int(amount))
        return results

    def _queue(self, settlement: _Settlement) -> None:
        if len(self._pending) >= _MAX_PENDING:
            dropped = self._pending.popleft()
            self._held.pop(dropped.hold.id, None)  # its hold will expire and go back to its user
            self._log.error(
                "pending-full",
                "Settlement queue full; the oldest settlement is dropped (its hold will be returned)",
                pending=len(self._pending),
            )
        self._pending.append(settlement)
        self._metrics.pending_settlements.set(len(self._pending))

    # -- upkeep ---------------------------------------------------------------------------------------------

    async def maintain(self) -> None:
        """One tick: write queued settlements, renew this replica's holds, return expired ones.

        Expired holds are only returned from the second healthy tick on: after an outage every live replica
        first writes its queue and renews its holds (they tick as often), so the holds of requests that ran
        through the outage are settled, not returned.
        """
        started = perf_counter()
        await self.listen()
        try:
            await self._write_pending()
            await self._renew()
            if self._healthy_ticks >= 1:
                await self._return_expired()
        except StoreUnavailable:
            self._healthy_ticks = 0
        else:
            self._healthy_ticks += 1
        self._metrics.duration["maintain"].observe(perf_counter() - started)

    async def _write_pending(self) -> None:
        while self._pending:
            batch = [self._pending[index] for index in range(min(len(self._pending), 256))]
            await self._send_settlements(batch)
            for _ in batch:
                self._pending.popleft()
            self._metrics.pending_settlements.set(len(self._pending))

    async def _renew(self) -> None:
        due = self._clock() - self.hold_seconds / 3
        stale = [hold_id for hold_id, renewed in self._held.items() if renewed <= due]
        if not stale:
            return
        await self._call("maintain", "execute", _RENEW, stale, self.hold_seconds)
        now = self._clock()
        for hold_id in stale:
            if hold_id in self._held:
                self._held[hold_id] = now

    async def _return_expired(self) -> None:
        row = await self._call("maintain", "fetchrow", _REAP, _REAP_BATCH)
        holds, micros = int(row[0]), int(row[1])
        if holds:
            self._metrics.expired_holds.inc(holds)
            self._metrics.expired_credits.inc(to_credits(micros))
            logger.warning(
                "Returned expired holds to their users",
                holds=holds,
                credits=to_credits(micros),
                owners=list(row[2]),
                returned_by=self.replica,
            )

    async def close(self) -> None:
        """Write queued settlements (for at most a few seconds) and close the pool."""
        try:
            await asyncio.wait_for(self._settlements.wait_idle(), _CLOSE_SECONDS)
        except TimeoutError:
            logger.error("Settlements still in flight at shutdown")
        if self._pending:
            try:
                await asyncio.wait_for(self._write_pending(), _CLOSE_SECONDS)
            except (StoreUnavailable, TimeoutError):
                logger.error(
                    "Settlements not written at shutdown; their holds will be returned to their users",
                    pending=len(self._pending),
                )
        if self._listener is not None:
            listener, self._listener = self._listener, None
            try:
                await asyncio.wait_for(listener.close(), _CLOSE_SECONDS)
            except (TimeoutError, *UNAVAILABLE):
                listener.terminate()
        try:
            await asyncio.wait_for(self._pool.close(), _CLOSE_SECONDS)
        except TimeoutError:
            self._pool.terminate()


async def migrate(pool: asyncpg.Pool) -> int:
    """Bring the schema up to date under an advisory lock (replicas starting together wait in turn)."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        await connection.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version ("
            "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        version = int(
            await connection.fetchval(f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_version")
        )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await connection.execute(script)
            await connection.execute(f"INSERT INTO {SCHEMA}.schema_version (version) VALUES ($1)", number)
            logger.info("PostgreSQL schema migrated", version=number)
        return max(version, len(MIGRATIONS))


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """Release a pooled connection as it is, without asyncpg's default reset query.

    The default (`RESET ALL; UNLISTEN *; ...`) is one more round trip per statement. These statements leave
    no session state behind (no SET, LISTEN, cursor or session lock), and asyncpg itself still rolls back an
    open transaction.
    """


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
