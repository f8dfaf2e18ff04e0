"""What only the PostgreSQL engine does: replicas sharing one database, holds, expiry, outages, start-up.

Each "replica" here is its own `PostgresStore` (its own pool and hold bookkeeping) on one database, as three
gateway processes would be; the real processes are in tests/integration/test_scale_out.py.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from gateway.store import (
    KeyRefused,
    StoreConfigurationError,
    StoreMetrics,
    StoreUnavailable,
    hash_key,
    to_micros,
)
from gateway.store.postgres import PostgresStore
from gateway.store.postgres_schema import MIGRATIONS
from support.postgres import PostgresServer
from support.processes import free_port

pytestmark = pytest.mark.anyio


def metrics() -> StoreMetrics:
    return StoreMetrics(CollectorRegistry(), "postgresql")


def sample(store_metrics: StoreMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    return store_metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def charge(store: PostgresStore, hold, amount: float) -> int:
    return await store.settle(hold, "m", cost=to_micros(amount), prompt_tokens=1, completion_tokens=1)


async def open_replicas(url: str, count: int, **kwargs) -> list[PostgresStore]:
    return list(await asyncio.gather(*(PostgresStore.open(url, metrics(), **kwargs) for _ in range(count))))


async def rows(url: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetch(query)
    finally:
        await connection.close()


class TestReplicas:
    async def test_replicas_starting_together_migrate_once_and_create_one_demo_key(self, postgres):
        """Three replicas open a fresh database at the same moment: one schema, one demo user, one key."""
        url = postgres.create_database()
        replicas = await open_replicas(url, 3)
        keys = await asyncio.gather(*(replica.ensure_demo_user(10.0, None) for replica in replicas))
        assert len([key for key in keys if key is not None]) == 1
        (key,) = [key for key in keys if key is not None]
        assert all([await replica.authenticate(key) == 1 for replica in replicas])
        assert [r["version"] for r in await rows(url, "SELECT version FROM gatewayz.schema_version")] == [
            1,
            2,
        ]
        assert len(await rows(url, "SELECT 1 FROM gatewayz.users")) == 1
        stored = await rows(url, "SELECT key_hash FROM gatewayz.api_keys")
        assert [r["key_hash"] for r in stored] == [hash_key(key)]  # never the key itself
        for replica in replicas:
            await replica.close()

    async def test_replicas_racing_never_overspend_and_the_books_balance(self, postgres):
        """3 replicas x 60 concurrent requests on a balance that fits 50 of them: exactly 50 granted,
        and once settled, balance + Σ charged = start and Σ charged = Σ usage, to the micro-credit."""
        url = postgres.create_database()
        replicas = await open_replicas(url, 3)
        await replicas[0].ensure_demo_user(50.0, "test-bootstrap-key")

        attempted = 0
        all_attempted = asyncio.Event()

        async def request(replica: PostgresStore, index: int) -> int:
            nonlocal attempted
            hold = await replica.reserve(1, to_micros(1.0))
            attempted += 1
            if attempted == 180:
                all_attempted.set()
            await all_attempted.wait()  # every hold is in flight at once, as in a burst of slow calls
            if hold is None:
                return 0
            cost = 1_000 + index * 7  # distinct costs, every one below the hold
            return await replica.settle(hold, "m", cost=cost, prompt_tokens=index, completion_tokens=1)

        charged = await asyncio.gather(
            *(request(replica, index) for replica in replicas for index in range(60))
        )
        granted = [amount for amount in charged if amount]
        assert len(granted) == 50
        (usage,) = await replicas[1].usage(1)
        assert usage.requests == 50
        assert to_micros(usage.credits) == sum(charged)
        assert to_micros(await replicas[2].balance(1)) + sum(charged) == to_micros(50.0)
        assert await rows(url, "SELECT 1 FROM gatewayz.holds") == []
        for replica in replicas:
            await replica.close()


class TestHolds:
    async def test_a_hold_is_a_row_until_settled_and_a_retried_settlement_charges_once(self, postgres):
        """The hold row exists while the request runs; settling the same hold again changes nothing."""
        url = postgres.create_database()
        (store,) = await open_replicas(url, 1)
        await store.ensure_demo_user(10.0, "test-bootstrap-key")
        hold = await store.reserve(1, to_micros(4.0))
        (row,) = await rows(url, "SELECT id, user_id, micros, replica FROM gatewayz.holds")
        assert (row["id"], row["user_id"], row["micros"], row["replica"]) == (
            hold.id,
            1,
            to_micros(4.0),
            store.replica,
        )
        assert await charge(store, hold, 1.0) == to_micros(1.0)
        # e.g. the first attempt committed but its answer was lost: the retry must not charge again
        assert await charge(store, hold, 1.0) == 0
        assert await store.balance(1) == 9.0
        (usage,) = await store.usage(1)
        assert usage.requests == 1
        await store.close()

    async def test_a_settlement_whose_caller_is_cancelled_midway_is_still_written(self, postgres):
        """A client gone (its task cancelled) while the settlement is out: it is charged all the same.

        The gateway's stream settlement relies on this instead of a cancel scope around the store.
        """
        url = postgres.create_database()
        (store,) = await open_replicas(url, 1)
        await store.ensure_demo_user(10.0, "test-bootstrap-key")
        hold = await store.reserve(1, to_micros(4.0))
        settling = asyncio.ensure_future(charge(store, hold, 1.5))
        await asyncio.sleep(0)  # the settlement has gone out: the task now waits for its answer
        settling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await settling
        await store._settlements.wait_idle()  # the batch in flight
        assert await store.balance(1) == 8.5
        assert await rows(url, "SELECT id FROM gatewayz.holds") == []
        (usage,) = await store.usage(1)
        assert usage.requests == 1
        await store.close()

    async def test_a_dead_replicas_holds_are_returned_by_another(self, postgres):
        """A replica that stops (never settles, never renews) loses its holds to the next live replica's
        upkeep once they expire: the money is back, counted, and the late settlement charges nothing."""
        url = postgres.create_database()
        dead, alive = await open_replicas(url, 2, hold_seconds=1.0)
        await alive.ensure_demo_user(10.0, "test-bootstrap-key")
        holds = [await dead.reserve(1, to_micros(3.0)) for _ in range(3)]
        assert await alive.balance(1) == 1.0
        await alive.maintain()
        await asyncio.sleep(1.1)
        for _ in range(2):  # expired holds are returned from the second healthy tick on
            await alive.maintain()
        assert await alive.balance(1) == 10.0
        assert sample(alive._metrics, "gateway_store_expired_holds_total") == 3
        assert sample(alive._metrics, "gateway_store_expired_hold_credits_total") == 9.0
        assert await rows(url, "SELECT 1 FROM gatewayz.holds") == []
        assert await charge(dead, holds[0], 1.0) == 0
        assert await alive.balance(1) == 10.0
        for store in (dead, alive):
            await store.close()

    async def test_a_live_request_keeps_its_hold_past_the_lease(self, postgres):
        """A long request (a stream) is renewed by its replica's upkeep, so no other replica returns it."""
        url = postgres.create_database()
        owner, other = await open_replicas(url, 2, hold_seconds=1.0)
        await owner.ensure_demo_user(10.0, "test-bootstrap-key")
        hold = await owner.reserve(1, to_micros(5.0))
        for _ in range(15):  # 2.5 leases
            await asyncio.gather(owner.maintain(), other.maintain())
            await asyncio.sleep(owner.maintenance_seconds)
        assert await other.balance(1) == 5.0
        assert await charge(owner, hold, 2.0) == to_micros(2.0)
        assert await other.balance(1) == 8.0
        for store in (owner, other):
            await store.close()


class TestKeysAcrossReplicas:
    async def test_a_revocation_reaches_every_replica_at_once(self, postgres):
        """Replica B remembers a key; A revokes it. B's very next reservation is refused by the database
        (before any notification), and B's lookup sees the revocation as soon as NOTIFY arrives (measured)."""
        url = postgres.create_database()
        a, b = await open_replicas(url, 2)
        await a.ensure_demo_user(10.0, "test-bootstrap-key")
        record = await a.create_key(1, "test-key-shared", {"alias": "shared", "rpm": 5})
        key = await b.lookup("test-key-shared")
        assert await b.lookup("test-key-shared") is key  # remembered: no query
        await a.revoke_key(record.id)
        with pytest.raises(KeyRefused) as refused:
            await b.reserve(1, to_micros(1.0), key)
        assert refused.value.reason == "key_revoked"
        await a.update_key(record.id, {"rpm": 7})  # a second change, heard the same way
        started = time.perf_counter()
        while (found := await b.lookup("test-key-shared")) is key:
            await asyncio.sleep(0.001)
        heard = time.perf_counter() - started
        assert found.revoked
        assert heard < 0.5, heard
        print(f"KEYS notify heard after {heard * 1000:.1f} ms")
        for store in (a, b):
            await store.close()

    async def test_a_lost_listen_connection_stops_trusting_memory_until_it_is_back(self, postgres):
        """With its LISTEN connection killed a replica asks the database for every key (a change made
        meanwhile is seen), and its next tick listens again."""
        url = postgres.create_database()
        a, b = await open_replicas(url, 2)
        await a.ensure_demo_user(10.0, "test-bootstrap-key")
        record = await a.create_key(1, "test-key-listen", {"alias": "listen", "rpm": 5})
        await b.lookup("test-key-listen")
        await rows(url, f"SELECT pg_terminate_backend({b._listener.get_server_pid()})")
        for _ in range(200):  # the connection's end reaches b within milliseconds
            if b._listener is None or b._listener.is_closed():
                break
            await asyncio.sleep(0.005)
        assert b._listener is None or b._listener.is_closed()
        # A change whose notification B cannot hear (written without NOTIFY, e.g. by hand in psql).
        await rows(url, f"UPDATE gatewayz.api_keys SET rpm = 9 WHERE id = {record.id}")  # noqa: S608 - an int
        assert (await b.lookup("test-key-listen")).rpm == 9
        await b.maintain()
        assert b._listener is not None
        assert (await b.lookup("test-key-listen")).rpm == 9
        for store in (a, b):
            await store.close()

    async def test_budget_is_shared_and_expired_holds_free_it(self, postgres):
        """Two replicas reserve against one budget: never more than it; a dead replica's hold stops
        counting against the budget once it is returned."""
        url = postgres.create_database()
        a, b, reaper = await open_replicas(url, 3, hold_seconds=1.0)
        await a.ensure_demo_user(100.0, "test-bootstrap-key")
        await a.create_key(1, "test-key-budget", {"alias": "budget", "budget_micros": to_micros(5)})
        keys = [await replica.lookup("test-key-budget") for replica in (a, b)]

        async def one(index: int):
            try:
                return await (a, b)[index % 2].reserve(1, to_micros(1.0), keys[index % 2])
            except KeyRefused:
                return None

        holds = await asyncio.gather(*(one(index) for index in range(20)))
        granted = [hold for hold in holds if hold is not None]
        assert len(granted) == 5
        (held,) = await rows(url, "SELECT held_micros FROM gatewayz.api_keys WHERE alias = 'budget'")
        assert held["held_micros"] == to_micros(5)
        await asyncio.sleep(1.1)  # a and b never renew: both "died"; the third replica returns their holds
        for _ in range(2):
            await reaper.maintain()
        (held,) = await rows(
            url, "SELECT held_micros, spend_micros FROM gatewayz.api_keys WHERE alias = 'budget'"
        )
        assert (held["held_micros"], held["spend_micros"]) == (0, 0)
        assert await reaper.reserve(1, to_micros(5.0), await reaper.lookup("test-key-budget")) is not None
        for store in (a, b, reaper):
            await store.close()


class TestOutage:
    async def test_database_down_then_back(self):
        """Down: a reservation is StoreUnavailable (nothing charged) and a settlement waits in memory; back:
        the queued settlement is written once, and the books balance."""
        server = PostgresServer().start()
        try:
            url = server.create_database()
            store = await PostgresStore.open(url, metrics(), timeout=1.0, hold_seconds=30.0)
            await store.ensure_demo_user(10.0, "test-bootstrap-key")
            hold = await store.reserve(1, to_micros(4.0))
            server.stop()
            with pytest.raises(StoreUnavailable):
                await store.reserve(1, to_micros(1.0))
            charged = await store.settle(hold, "m", cost=to_micros(1.5), prompt_tokens=3, completion_tokens=4)
            assert charged == to_micros(1.5)  # what it will charge once written
            assert sample(store._metrics, "gateway_store_pending_settlements") == 1
            assert sample(store._metrics, "gateway_store_errors_total", {"operation": "reserve"}) >= 1
            await store.maintain()  # still down: stays queued, no error escapes
            assert sample(store._metrics, "gateway_store_pending_settlements") == 1
            server.start()
            for _ in range(3):
                await store.maintain()
            assert sample(store._metrics, "gateway_store_pending_settlements") == 0
            assert await store.balance(1) == 8.5
            (usage,) = await store.usage(1)
            assert (usage.requests, usage.prompt_tokens, usage.completion_tokens) == (1, 3, 4)
            assert usage.credits == 1.5
            assert await store.reserve(1, to_micros(1.0)) is not None
            await store.close()
        finally:
            server.destroy()


class TestMigration:
    async def test_a_version_1_database_keeps_its_keys(self, postgres):
        """A database from before keys were objects is migrated at start; its keys keep working."""
        url = postgres.create_database()
        connection = await asyncpg.connect(url)
        try:
            await connection.execute("CREATE SCHEMA gatewayz")
            await connection.execute(
                "CREATE TABLE gatewayz.schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ "
                "NOT NULL DEFAULT now())"
            )
            await connection.execute(MIGRATIONS[0])
            await connection.execute("INSERT INTO gatewayz.schema_version (version) VALUES (1)")
            await connection.execute(
                "INSERT INTO gatewayz.users (id, username, balance_micros) VALUES (1, 'demo', 5)"
            )
            await connection.execute(
                "INSERT INTO gatewayz.api_keys (key_hash, user_id) VALUES ($1, 1)", hash_key("test-old-key")
            )
        finally:
            await connection.close()
        (store,) = await open_replicas(url, 1)
        key = await store.lookup("test-old-key")
        assert (key.user_id, key.alias) == (1, "key-" + hash_key("test-old-key")[:8])
        assert await store.authenticate("test-old-key") == 1
        assert [r["version"] for r in await rows(url, "SELECT version FROM gatewayz.schema_version")] == [
            1,
            2,
        ]
        await store.close()


class TestStartup:
    async def test_a_wrong_password_is_a_configuration_error(self, postgres):
        """PostgreSQL refusing our credentials is not worth waiting for: it is reported at once."""
        url = postgres.url().replace(postgres.password, "not-the-password")
        with pytest.raises(StoreConfigurationError, match="password"):
            await PostgresStore.open(url, metrics(), wait_seconds=30)

    async def test_no_such_database_is_a_configuration_error(self, postgres):
        with pytest.raises(StoreConfigurationError, match="does not exist"):
            await PostgresStore.open(postgres.url("no_such_database"), metrics(), wait_seconds=30)

    async def test_nothing_listening_gives_up_after_the_wait(self):
        """A server that never answers: StoreUnavailable once the start-up wait has passed."""
        url = f"postgresql://gatewayz:pw@127.0.0.1:{free_port()}/gatewayz"
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(PostgresStore.open(url, metrics(), wait_seconds=0.5, timeout=0.5), 10)
