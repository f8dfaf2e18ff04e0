"""PostgreSQL drivers on the gateway's money path: asyncpg against psycopg 3, same statements, same rounds.

    uv run --with 'psycopg[binary,pool]' python bench/store_drivers.py [--rounds 5] [--requests 4000]

Per request: the reservation and the settlement, each one call of the store's own SQL functions
(`gatewayz.reserve()`, `gatewayz.settle()`, one-element arrays: no batching), 16 requests in flight on one
uvloop with a pool of 10 connections per driver (asyncpg's pool without its per-release reset query, as
the store runs it; psycopg's `AsyncConnectionPool`, statements prepared server-side), every session with
`synchronous_commit=off` as the store's. A third variant,
`store`, is the gateway's `PostgresStore` itself (asyncpg plus group commit of concurrent calls). A private
PostgreSQL (Debian's, durable: fsync on) runs on CPU 1, the client on CPU 0. Per round and variant, on a
fresh database: requests/s and the client's CPU per request (what a gateway process pays). Variants rotate
in order between rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import uvloop
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from gateway.store import StoreMetrics  # noqa: E402
from gateway.store.postgres import PostgresStore  # noqa: E402
from gateway.store.postgres_schema import SCHEMA  # noqa: E402
from support.postgres import PostgresServer  # noqa: E402

USERS = 16
CONCURRENCY = 16
POOL = 10
RESERVE = (
    "SELECT {schema}.reserve(ARRAY[{p}]::bigint[], ARRAY[{p}]::bigint[], ARRAY[{p}]::bigint[], {p}, {p})"
)
SETTLE = (
    "SELECT {schema}.settle(ARRAY[{p}]::bigint[], ARRAY[{p}]::bigint[], ARRAY[{p}]::bigint[], "
    "ARRAY[{p}]::text[], ARRAY[{p}]::bigint[], ARRAY[{p}]::bigint[])"
)


def numbered(template: str) -> str:
    """The template with asyncpg's $1, $2, ... placeholders."""
    parts = template.split("{p}")
    return "".join(
        part + (f"${index + 1}" if index < len(parts) - 1 else "") for index, part in enumerate(parts)
    )


RESERVE_ASYNCPG = numbered(RESERVE.replace("{schema}", SCHEMA))
SETTLE_ASYNCPG = numbered(SETTLE.replace("{schema}", SCHEMA))
RESERVE_PSYCOPG = RESERVE.replace("{schema}", SCHEMA).replace("{p}", "%s")
SETTLE_PSYCOPG = SETTLE.replace("{schema}", SCHEMA).replace("{p}", "%s")


async def prepare(url: str) -> None:
    """Schema and users, through the gateway's own store."""
    store = await PostgresStore.open(url, StoreMetrics(CollectorRegistry(), "postgresql"))
    await store.ensure_demo_user(10**9, "bench-not-a-secret-key")
    for index in range(USERS - 1):
        await store.create_user(f"bench-{index}", 10**9)
    await store.close()


async def run_store(url: str, requests: int) -> float:
    """The gateway's store itself (asyncpg + group commit): reserve then settle, `requests` times."""
    store = await PostgresStore.open(url, StoreMetrics(CollectorRegistry(), "postgresql"), pool_size=POOL)
    queue = iter(range(requests))

    async def worker() -> None:
        for index in queue:
            hold = await store.reserve(1 + index % USERS, 2_000)
            assert hold is not None
            await store.settle(hold, "bench", cost=1_234, prompt_tokens=10, completion_tokens=20)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    await store.close()
    return elapsed


async def _no_reset(_connection: asyncpg.Connection) -> None:
    pass


async def run_asyncpg(url: str, requests: int) -> float:
    """The two calls through an asyncpg pool, one call per request and step."""
    pool = await asyncpg.create_pool(
        url, min_size=POOL, max_size=POOL, reset=_no_reset, server_settings={"synchronous_commit": "off"}
    )
    queue = iter(range(requests))
    replica = "bench:" + secrets.token_hex(3)

    async def worker() -> None:
        for index in queue:
            hold = secrets.randbits(63)
            user = 1 + index % USERS
            (granted,) = await pool.fetchval(RESERVE_ASYNCPG, hold, user, 2_000, replica, 30.0)
            assert granted
            (charged,) = await pool.fetchval(SETTLE_ASYNCPG, hold, user, 1_234, "bench", 10, 20)
            assert charged == 1_234

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return elapsed


async def run_psycopg(url: str, requests: int) -> float:
    """The same two statements through psycopg 3's AsyncConnectionPool, server-side prepared."""
    from psycopg_pool import AsyncConnectionPool  # noqa: PLC0415 - only with `--with psycopg`

    pool = AsyncConnectionPool(
        url, min_size=POOL, max_size=POOL, open=False, kwargs={"options": "-c synchronous_commit=off"}
    )
    await pool.open(wait=True)
    queue = iter(range(requests))
    replica = "bench:" + secrets.token_hex(3)

    async def worker() -> None:
        for index in queue:
            hold = secrets.randbits(63)
            user = 1 + index % USERS
            async with pool.connection() as connection:
                cursor = await connection.execute(
                    RESERVE_PSYCOPG, (hold, user, 2_000, replica, 30.0), prepare=True
                )
                assert (await cursor.fetchone())[0] == [True]
            async with pool.connection() as connection:
                cursor = await connection.execute(
                    SETTLE_PSYCOPG, (hold, user, 1_234, "bench", 10, 20), prepare=True
                )
                assert (await cursor.fetchone())[0] == [1_234]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return elapsed


def measure(driver: str, server: PostgresServer, requests: int) -> dict[str, float]:
    url = server.create_database("bench")
    uvloop.run(prepare(url))
    runner = {"asyncpg": run_asyncpg, "psycopg": run_psycopg, "store": run_store}[driver]
    uvloop.run(runner(url, requests // 10))  # warm-up: connections, prepared statements, caches
    cpu_before = time.process_time()
    elapsed = uvloop.run(runner(url, requests))
    cpu = time.process_time() - cpu_before
    return {"rps": requests / elapsed, "cpu_us": cpu / requests * 1e6}


def summary(values: list[float], fmt: str = "{:.0f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    server = PostgresServer(durable=True).start()
    os.sched_setaffinity(server.process.pid, {1})  # backends fork from the postmaster: they inherit it
    variants = ("asyncpg", "psycopg", "store")
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in variants}
    print(f"load: {os.getloadavg()}", flush=True)
    try:
        for round_no in range(args.rounds):
            order = variants[round_no % 3 :] + variants[: round_no % 3]
            for driver in order:
                result = measure(driver, server, args.requests)
                results[driver].append(result)
                print(
                    f"round {round_no + 1} {driver:8}: {result['rps']:7.0f} req/s  "
                    f"{result['cpu_us']:6.1f} us client CPU/req",
                    flush=True,
                )
    finally:
        server.destroy()
    print(f"load: {os.getloadavg()}")
    print(f"\n{'':26}median (min-max) over {args.rounds} rounds, {args.requests} requests each")
    for driver, rows in results.items():
        print(f"{driver + ' req/s':26}{summary([r['rps'] for r in rows])}")
        print(f"{driver + ' client CPU us/req':26}{summary([r['cpu_us'] for r in rows])}")
    pairs = list(zip(results["asyncpg"], results["psycopg"], strict=True))
    print(f"{'psycopg/asyncpg CPU':26}{summary([p['cpu_us'] / a['cpu_us'] for a, p in pairs], '{:.2f}')}")
    print(f"{'asyncpg/psycopg req/s':26}{summary([a['rps'] / p['rps'] for a, p in pairs], '{:.2f}')}")
    store = list(zip(results["asyncpg"], results["store"], strict=True))
    print(f"{'store/asyncpg CPU':26}{summary([s['cpu_us'] / a['cpu_us'] for a, s in store], '{:.2f}')}")


if __name__ == "__main__":
    main()
