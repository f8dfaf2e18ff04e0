"""Keys as objects in the `Store` contract, on both engines: create, list, change, revoke, budgets, spend.

The cross-replica part (a revocation heard by another replica through NOTIFY) is in `test_store_postgres.py`;
the HTTP API and enforcement over loopback are in `test_keys_route.py` and tests/integration/test_keys.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from gateway.store import AliasInUse, KeyRefused, to_micros
from gateway.store.contract import next_period_start, period_start

pytestmark = pytest.mark.anyio


async def user_with_key(store, alias: str = "team-a", balance: float = 100.0, **fields):
    """A new user (after demo user 1) with one key; (user id, secret key, record)."""
    await store.ensure_demo_user(10.0, "test-bootstrap-key")
    user_id = await store.create_user(f"user-{alias}", balance)
    secret = f"test-key-{alias}"
    record = await store.create_key(user_id, secret, {"alias": alias, **fields})
    return user_id, secret, record


async def settle(store, hold, cost: float) -> int:
    return await store.settle(hold, "m", cost=to_micros(cost), prompt_tokens=1, completion_tokens=1)


async def age_budget_period(store, key_id: int) -> None:
    """Move the key's recorded period back 40 days, as if its period had ended."""
    if store.engine == "sqlite":
        store.core._db.execute(
            "UPDATE api_keys SET period_start = '2000-01-01T00:00:00Z' WHERE id = ?", (key_id,)
        )
    else:
        await store._pool.execute(
            "UPDATE gatewayz.api_keys SET period_start = period_start - interval '40 days' WHERE id = $1",
            key_id,
        )


class TestKeyObjects:
    async def test_create_lookup_and_list(self, store):
        """A created key authenticates as its user and carries its limits; listings never show the key."""
        expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
        user_id, secret, record = await user_with_key(
            store,
            budget_micros=to_micros(5),
            budget_period="monthly",
            rpm=60,
            tpm=1000,
            models=["b", "a"],
            expires_at=expires,
        )
        assert (record.user_id, record.alias, record.budget, record.budget_period) == (
            user_id,
            "team-a",
            5.0,
            "monthly",
        )
        assert (record.rpm, record.tpm, record.models, record.spend) == (60, 1000, ["a", "b"], 0.0)
        assert record.expires_at == expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert record.budget_reset_at == next_period_start("monthly", datetime.now(UTC)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        assert record.revoked_at is None
        assert record.last_used_at is None
        found = await store.lookup(secret)
        assert (found.id, found.user_id, found.rpm, found.tpm) == (record.id, user_id, 60, 1000)
        assert found.models == frozenset({"a", "b"})
        assert found.expires_at == expires.timestamp()
        assert await store.authenticate(secret) == user_id
        assert await store.lookup("test-no-such-key") is None
        listed = await store.keys(None, 100, 0)
        assert [key.alias for key in listed][-1] == "team-a"
        assert [key.id for key in await store.keys(user_id, 100, 0)] == [record.id]
        assert await store.keys(user_id, 100, 1) == []
        assert await store.key(record.id) == record
        assert await store.key(10**6) is None
        assert await store.key(2**70) is None
        assert secret not in repr(listed)

    async def test_keys_made_without_an_alias_get_one(self, store):
        """The demo key (and any `add_key`) is `key-` and 8 hex of its hash."""
        await store.ensure_demo_user(10.0, "test-bootstrap-key")
        found = await store.lookup("test-bootstrap-key")
        assert found.alias.startswith("key-")
        assert len(found.alias) == 12
        assert found.rpm is None
        assert found.budget_micros is None

    async def test_alias_taken_by_a_live_key_is_refused_and_free_after_revocation(self, store):
        """Two live keys never share an alias (409); a revoked key's alias can be used again."""
        user_id, _, record = await user_with_key(store)
        with pytest.raises(AliasInUse) as refused:
            await store.create_key(user_id, "test-key-second", {"alias": "team-a"})
        assert refused.value.status_code == 409
        other = await store.create_key(user_id, "test-key-other", {"alias": "team-b"})
        with pytest.raises(AliasInUse):
            await store.update_key(other.id, {"alias": "team-a"})
        await store.revoke_key(record.id)
        again = await store.create_key(user_id, "test-key-again", {"alias": "team-a"})
        assert again.alias == "team-a"

    async def test_update_is_seen_by_the_next_lookup(self, store):
        """A remembered key shows its new limits at once; None clears a limit."""
        _, secret, record = await user_with_key(store, rpm=10)
        assert (await store.lookup(secret)).rpm == 10
        changed = await store.update_key(record.id, {"rpm": 20, "tpm": 500, "models": ["m"]})
        assert (changed.rpm, changed.tpm, changed.models) == (20, 500, ["m"])
        found = await store.lookup(secret)
        assert (found.rpm, found.tpm, found.models) == (20, 500, frozenset({"m"}))
        cleared = await store.update_key(record.id, {"rpm": None, "models": None})
        assert (cleared.rpm, cleared.models) == (None, None)
        assert (await store.lookup(secret)).rpm is None
        assert await store.update_key(10**6, {"rpm": 1}) is None
        assert await store.update_key(record.id, {}) == await store.key(record.id)

    async def test_revoked_key_is_refused_at_once(self, store):
        """After revocation the key is flagged, does not authenticate, and cannot reserve (401)."""
        user_id, secret, record = await user_with_key(store)
        key = await store.lookup(secret)
        revoked = await store.revoke_key(record.id)
        assert revoked.revoked_at is not None
        assert (await store.revoke_key(record.id)).revoked_at == revoked.revoked_at  # idempotent
        assert (await store.lookup(secret)).revoked
        assert await store.authenticate(secret) is None
        with pytest.raises(KeyRefused) as refused:
            await store.reserve(user_id, to_micros(1), key)  # a request that authenticated just before
        assert (refused.value.status_code, refused.value.reason) == (401, "key_revoked")
        assert await store.balance(user_id) == 100.0
        assert await store.revoke_key(10**6) is None

    async def test_expired_key_cannot_reserve(self, store):
        """A key past its expiry does not authenticate and its reservation is refused (401)."""
        user_id, secret, record = await user_with_key(store)
        past = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        await store.update_key(record.id, {"expires_at": past})
        key = await store.lookup(secret)
        assert key.expired(datetime.now(UTC).timestamp())
        assert await store.authenticate(secret) is None
        with pytest.raises(KeyRefused) as refused:
            await store.reserve(user_id, to_micros(1), key)
        assert (refused.value.status_code, refused.value.reason) == (401, "key_expired")


class TestBudgets:
    async def test_budget_admits_up_to_the_exact_boundary(self, store):
        """Budget 3: three holds of 1 fit (what is held counts), a fourth is refused by one micro-credit;
        settled at 1 each the spend is exactly 3, and nothing more fits, not even 1 micro-credit."""
        user_id, secret, record = await user_with_key(store, budget_micros=to_micros(3))
        key = await store.lookup(secret)
        holds = [await store.reserve(user_id, to_micros(1), key) for _ in range(3)]
        assert all(holds)
        with pytest.raises(KeyRefused) as refused:
            await store.reserve(user_id, 1, key)
        assert (refused.value.status_code, refused.value.reason) == (402, "budget_exceeded")
        assert "team-a" in refused.value.detail
        for hold in holds:
            assert await settle(store, hold, 1.0) == to_micros(1)
        assert (await store.key(record.id)).spend == 3.0
        with pytest.raises(KeyRefused):
            await store.reserve(user_id, 1, key)
        assert await store.balance(user_id) == 97.0  # only what was charged left the balance

    async def test_unspent_part_and_failed_calls_free_the_budget(self, store):
        """A hold settled below it, or released, gives the rest of the budget back."""
        user_id, secret, record = await user_with_key(store, budget_micros=to_micros(2))
        key = await store.lookup(secret)
        first = await store.reserve(user_id, to_micros(2), key)
        with pytest.raises(KeyRefused):
            await store.reserve(user_id, 1, key)
        await settle(store, first, 0.5)
        second = await store.reserve(user_id, to_micros(1.5), key)
        await store.release(second)
        third = await store.reserve(user_id, to_micros(1.5), key)
        assert third is not None
        await settle(store, third, 1.5)
        record = await store.key(record.id)
        assert record.spend == 2.0
        assert record.last_used_at is not None

    async def test_raising_the_budget_admits_again(self, store):
        """PATCHing the budget takes effect for the next reservation."""
        user_id, secret, record = await user_with_key(store, budget_micros=to_micros(1))
        key = await store.lookup(secret)
        await settle(store, await store.reserve(user_id, to_micros(1), key), 1.0)
        with pytest.raises(KeyRefused):
            await store.reserve(user_id, 1, key)
        await store.update_key(record.id, {"budget_micros": to_micros(2)})
        key = await store.lookup(secret)
        assert await store.reserve(user_id, to_micros(1), key) is not None

    async def test_period_reset_starts_the_spend_again(self, store):
        """Once the key's budget period is over its spend counts as 0 and it may spend its budget again."""
        user_id, secret, record = await user_with_key(
            store, budget_micros=to_micros(1), budget_period="daily"
        )
        key = await store.lookup(secret)
        await settle(store, await store.reserve(user_id, to_micros(1), key), 1.0)
        with pytest.raises(KeyRefused):
            await store.reserve(user_id, 1, key)
        if store.engine == "sqlite":
            store.core.flush()
        await age_budget_period(store, record.id)
        assert (await store.key(record.id)).spend == 0.0
        hold = await store.reserve(user_id, to_micros(1), key)
        await settle(store, hold, 0.25)
        assert (await store.key(record.id)).spend == 0.25

    async def test_concurrent_reservations_never_exceed_the_budget(self, store):
        """50 reservations of 1 at once against a budget of 7: exactly 7 are granted."""
        user_id, secret, _ = await user_with_key(store, budget_micros=to_micros(7))
        key = await store.lookup(secret)

        async def one():
            try:
                return await store.reserve(user_id, to_micros(1), key)
            except KeyRefused:
                return None

        holds = await asyncio.gather(*(one() for _ in range(50)))
        assert len([hold for hold in holds if hold is not None]) == 7
        assert await store.balance(user_id) == 93.0

    async def test_unbudgeted_keys_record_spend_too(self, store):
        """Every key's spend and last use are kept, budget or not."""
        user_id, secret, record = await user_with_key(store)
        key = await store.lookup(secret)
        for _ in range(3):
            await settle(store, await store.reserve(user_id, to_micros(1), key), 0.5)
        record = await store.key(record.id)
        assert record.spend == 1.5
        assert record.last_used_at is not None
        if store.engine == "sqlite":
            store.core.flush()
            assert (await store.key(record.id)).spend == 1.5  # written once, not counted twice


class TestPeriods:
    def test_period_boundaries_are_utc_midnight_monday_and_the_first(self):
        """Daily, weekly (ISO: Monday) and monthly periods, as PostgreSQL's date_trunc in UTC."""
        now = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)  # a Thursday
        assert period_start("daily", now) == datetime(2026, 12, 31, tzinfo=UTC)
        assert period_start("weekly", now) == datetime(2026, 12, 28, tzinfo=UTC)
        assert period_start("monthly", now) == datetime(2026, 12, 1, tzinfo=UTC)
        assert next_period_start("daily", now) == datetime(2027, 1, 1, tzinfo=UTC)
        assert next_period_start("weekly", now) == datetime(2027, 1, 4, tzinfo=UTC)
        assert next_period_start("monthly", now) == datetime(2027, 1, 1, tzinfo=UTC)
        assert next_period_start("monthly", datetime(2027, 1, 31, tzinfo=UTC)) == datetime(
            2027, 2, 1, tzinfo=UTC
        )
