"""The `Store` contract, one suite run on both engines: SQLite (a file) and PostgreSQL (Debian's, private).

Demo bootstrap, keys, exact micro-credit arithmetic, holds that are settled or released, usage by model, and
no overspending under concurrency (the `store` fixture is in conftest.py; keys as objects are in
`test_store_keys.py`). What only one engine does is in `test_store_sqlite.py` and `test_store_postgres.py`.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.store import to_micros

pytestmark = pytest.mark.anyio


async def settle(store, hold, cost: float, model: str = "m", prompt: int = 1, completion: int = 1) -> int:
    return await store.settle(
        hold, model, cost=to_micros(cost), prompt_tokens=prompt, completion_tokens=completion
    )


class TestBootstrap:
    async def test_fresh_store_has_demo_user_and_one_generated_key(self, store):
        """User 1 is created once with a generated key; a second start creates no new key."""
        key = await store.ensure_demo_user(50.0, None)
        assert key is not None
        assert key.startswith("gw_")
        assert await store.authenticate(key) == 1
        assert await store.balance(1) == 50.0
        assert await store.ensure_demo_user(50.0, None) is None
        assert await store.balance(1) == 50.0  # not topped up again

    async def test_bootstrap_key(self, store):
        """GATEWAY_BOOTSTRAP_API_KEY becomes user 1's key and nothing is generated."""
        assert await store.ensure_demo_user(50.0, "test-bootstrap-key") is None
        assert await store.authenticate("test-bootstrap-key") == 1
        assert await store.ensure_demo_user(50.0, "test-bootstrap-key") is None

    async def test_users_and_keys(self, store):
        """A new user gets the next id after the demo user; its key authenticates it and nothing else."""
        await store.ensure_demo_user(50.0, "test-bootstrap-key")
        user_id = await store.create_user("other", 5.0)
        assert user_id == 2
        await store.add_key(user_id, "test-other-key")
        await store.add_key(user_id, "test-other-key")  # idempotent
        assert await store.authenticate("test-other-key") == 2
        assert await store.authenticate("test-unknown-key") is None
        user = await store.user(2)
        assert (user.id, user.username) == (2, "other")
        assert user.created_at.endswith("Z")
        assert len(user.created_at) == len("2026-01-01T00:00:00Z")
        assert await store.user(3) is None
        assert await store.user(2**70) is None  # no row can have it; never an error
        assert await store.balance(99) == 0.0


class TestCredits:
    async def test_reserve_settle_is_exact(self, store):
        """Reserve 3, settle at 1.25: the balance drops by exactly 1.25 and usage records it."""
        await store.ensure_demo_user(10.0, "test-bootstrap-key")
        hold = await store.reserve(1, to_micros(3.0))
        assert hold
        assert await store.balance(1) == 7.0  # the hold is taken at once
        charged = await settle(store, hold, 1.25, prompt=5, completion=2)
        assert charged == to_micros(1.25)
        assert await store.balance(1) == 8.75
        (usage,) = await store.usage(1)
        assert (usage.model, usage.requests, usage.prompt_tokens, usage.completion_tokens, usage.credits) == (
            "m",
            1,
            5,
            2,
            1.25,
        )

    async def test_reserve_refuses_what_is_not_there(self, store):
        """A reservation above the balance fails and changes nothing; so does one for no such user."""
        await store.ensure_demo_user(1.0, "test-bootstrap-key")
        assert await store.reserve(1, to_micros(1.5)) is None
        assert await store.reserve(42, to_micros(0.5)) is None
        assert await store.balance(1) == 1.0

    async def test_release_gives_the_hold_back_whole(self, store):
        """A failed call's hold goes back entirely and records no usage."""
        await store.ensure_demo_user(2.0, "test-bootstrap-key")
        hold = await store.reserve(1, to_micros(2.0))
        assert await store.reserve(1, to_micros(0.1)) is None
        await store.release(hold)
        await store.maintain()
        assert await store.balance(1) == 2.0
        assert await store.usage(1) == []

    async def test_cost_above_reservation_never_goes_negative(self, store):
        """An upstream overrunning its limit is charged only what the balance holds."""
        await store.ensure_demo_user(2.0, "test-bootstrap-key")
        hold = await store.reserve(1, to_micros(1.0))
        charged = await settle(store, hold, 5.0)
        assert charged == to_micros(2.0)
        assert await store.balance(1) == 0.0
        (usage,) = await store.usage(1)
        assert usage.credits == 2.0

    async def test_usage_by_model_most_credits_first(self, store):
        """Usage sums per model and lists the most expensive model first."""
        await store.ensure_demo_user(100.0, "test-bootstrap-key")
        for model, cost in (("cheap", 0.5), ("dear", 3.0), ("cheap", 0.25)):
            hold = await store.reserve(1, to_micros(5.0))
            await settle(store, hold, cost, model=model, prompt=2, completion=3)
        usage = await store.usage(1)
        assert [(u.model, u.requests, u.prompt_tokens, u.completion_tokens, u.credits) for u in usage] == [
            ("dear", 1, 2, 3, 3.0),
            ("cheap", 2, 4, 6, 0.75),
        ]
        assert await store.balance(1) == 100.0 - 3.75

    async def test_concurrent_reservations_never_overspend(self, store):
        """100 reservations of 1 credit at once on a balance of 10: exactly 10 are granted."""
        await store.ensure_demo_user(10.0, "test-bootstrap-key")
        holds = await asyncio.gather(*(store.reserve(1, to_micros(1.0)) for _ in range(100)))
        granted = [hold for hold in holds if hold is not None]
        assert len(granted) == 10
        assert await store.balance(1) == 0.0
        await asyncio.gather(*(settle(store, hold, 0.5) for hold in granted))
        assert await store.balance(1) == 5.0
        (usage,) = await store.usage(1)
        assert (usage.requests, usage.credits) == (10, 5.0)
