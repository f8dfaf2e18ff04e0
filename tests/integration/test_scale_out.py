"""Three gateway processes (`python -m gateway`, as users start them) on one PostgreSQL and one Redis.

Debian's postgresql and redis-server, private instances on loopback. The overspend race across replicas
with the exact accounting identities, a cross-replica cache hit, `kill -9` of a replica mid-load and its
holds returned by the others, Redis down (served, uncached) and PostgreSQL down (503, then back, nothing
charged twice). Every load is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from gateway.store import hash_key
from support.postgres import PostgresServer
from support.processes import ServiceProcess, free_port
from support.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

KEY = "test-scale-out-user-key"
RACER_KEY = "test-scale-out-racer-key"
ADMIN = "test-scale-out-admin-key"
START_CREDITS = 1000.0
RACER_CREDITS = 5.0
HOLD_SECONDS = 2.0
# 1,000 micro-credits per token either way: a response's cost is exact in integers.
CATALOG = """
[[providers]]
name = "local"
kind = "local"

[[providers.models]]
id = "held"
prompt_price = 0.001
completion_price = 0.001
max_output_tokens = 64
latency_ms = 400

[[providers.models]]
id = "long"
prompt_price = 0.001
completion_price = 0.001
max_output_tokens = 64
latency_ms = 8000

[[providers.models]]
id = "quick"
prompt_price = 0.001
completion_price = 0.001
max_output_tokens = 64
latency_ms = 5
"""
AUTH = {"Authorization": f"Bearer {KEY}"}
RACER_AUTH = {"Authorization": f"Bearer {RACER_KEY}"}


def chat(model: str, content: str = "how are the replicas today", **extra: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def cost_micros(response: httpx.Response) -> int:
    usage = response.json()["usage"]
    return (usage["prompt_tokens"] + usage["completion_tokens"]) * 1_000


class Cluster:
    """The database, Redis and three replicas; `books()` reads the ledger straight from PostgreSQL."""

    def __init__(self, root: Path) -> None:
        self.postgres = PostgresServer().start()
        self.redis = RedisServer().start()
        self.database_url = self.postgres.create_database("scale")
        catalog = root / "providers.toml"
        catalog.write_text(CATALOG)
        self.replicas: list[ServiceProcess] = []
        for index in range(3):
            log_dir = root / f"replica-{index}"
            log_dir.mkdir()
            self.replicas.append(
                ServiceProcess(
                    "gateway",
                    {
                        "DATABASE_URL": self.database_url,
                        "REDIS_URL": self.redis.url(),
                        "GATEWAY_PROVIDERS_FILE": str(catalog),
                        "GATEWAY_DB_PATH": str(log_dir / "unused.db"),
                        "GATEWAY_BOOTSTRAP_API_KEY": KEY,
                        "GATEWAY_DEMO_CREDITS": str(START_CREDITS),
                        "GATEWAY_HOLD_SECONDS": str(HOLD_SECONDS),
                        "GATEWAY_DB_TIMEOUT_SECONDS": "1",
                        "ADMIN_API_KEY": ADMIN,
                    },
                    log_dir,
                )
            )

    def start(self) -> Cluster:
        # All three at once, as a deploy does: migrations and demo user 1 must happen exactly once.
        with ThreadPoolExecutor(len(self.replicas)) as pool:
            list(pool.map(lambda replica: replica.start(ready_path="/ready"), self.replicas))
        # A second user with a small balance for the race (the gateway has no user API yet; keys have one).
        micros, digest = round(RACER_CREDITS * 1_000_000), hash_key(RACER_KEY)
        self.sql(
            "WITH racer AS (INSERT INTO gatewayz.users (username, balance_micros) "  # noqa: S608 - constants
            f"VALUES ('racer', {micros}) RETURNING id) "
            "INSERT INTO gatewayz.api_keys (key_hash, user_id, alias) "
            f"SELECT '{digest}', id, 'racer' FROM racer"
        )
        return self

    def sql(self, query: str) -> str:
        return self.postgres.psql(query, database=self.database_url.rsplit("/", 1)[1])

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
        self.redis.destroy()
        self.postgres.destroy()

    def books(self, username: str = "demo") -> dict[str, int]:
        """A user's balance, Σ usage credits and requests, and every open hold, exact (micro-credits)."""
        row = self.sql(
            "SELECT u.balance_micros, coalesce(sum(g.credits_micros), 0), coalesce(sum(g.requests), 0), "  # noqa: S608
            "(SELECT count(*) FROM gatewayz.holds) FROM gatewayz.users u "
            f"LEFT JOIN gatewayz.usage g ON g.user_id = u.id WHERE u.username = '{username}' "
            "GROUP BY u.balance_micros"
        )
        balance, charged, requests, holds = (int(value) for value in row.split("|"))
        return {"balance": balance, "charged": charged, "requests": requests, "holds": holds}

    def metric(self, name: str, labels: str = "") -> float:
        """The sum of one sample over every live replica's /metrics."""
        total = 0.0
        for replica in self.replicas:
            if replica.process is None or replica.process.poll() is not None:
                continue
            for line in httpx.get(replica.url + "/metrics", timeout=5).text.splitlines():
                if line.startswith((name + (labels or " "), f"{name}{{{labels}}}")):
                    total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("scale-out"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


async def fire(
    urls: list[str], bodies: list[dict], timeout: float = 30.0, auth: dict[str, str] = AUTH
) -> list[httpx.Response]:
    """Every body at once, spread round-robin over the replicas."""
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(f"{urls[index % len(urls)]}/v1/chat/completions", json=body, headers=auth)
                for index, body in enumerate(bodies)
            )
        )


class TestScaleOut:
    def test_one_demo_user_for_all_replicas(self, cluster):
        """The three replicas started together share one user 1 and one ledger."""
        balances = {
            httpx.get(f"{replica.url}/api/users/1", headers=AUTH).json()["credits"]
            for replica in cluster.replicas
        }
        assert balances == {START_CREDITS}
        for replica in cluster.replicas:
            assert httpx.get(replica.url + "/ready").json() == {
                "status": "ready",
                "store": "postgresql",
                "cache": "redis",
                "redis": "ok",
            }

    def test_overspend_race_across_replicas_and_the_exact_books(self, cluster):
        """300 concurrent requests over 3 replicas against a balance that holds ~67 worst cases at once:
        some are refused (402), the balance never goes below zero, and afterwards balance + Σ charged =
        start, Σ charged = Σ usage rows = Σ (tokens x price) of the answers the clients received."""
        before = cluster.books("racer")
        responses = asyncio.run(
            fire(
                [replica.url for replica in cluster.replicas],
                [chat("held") for _ in range(300)],
                auth=RACER_AUTH,
            )
        )
        statuses = [response.status_code for response in responses]
        assert set(statuses) <= {200, 402}, {s for s in statuses if s not in {200, 402}}
        assert statuses.count(402) > 0
        assert statuses.count(200) > 0
        received = sum(cost_micros(response) for response in responses if response.status_code == 200)
        after = cluster.books("racer")
        assert after["holds"] == 0
        assert after["balance"] >= 0
        assert after["balance"] + after["charged"] == round(RACER_CREDITS * 1_000_000)
        assert after["charged"] - before["charged"] == received
        assert after["requests"] - before["requests"] == statuses.count(200)

    def test_a_miss_on_one_replica_is_a_hit_on_another(self, cluster):
        """A temperature-0 completion asked of replica 0 is answered from the cache by 1 and 2, free."""
        first, *others = cluster.replicas
        body = chat("quick", content=f"cache me {time.time_ns()}", temperature=0)
        miss = httpx.post(f"{first.url}/v1/chat/completions", json=body, headers=AUTH)
        assert miss.headers["x-gatewayz-cache"] == "miss"
        charged = cluster.books()["charged"]
        for replica in others:
            hit = httpx.post(f"{replica.url}/v1/chat/completions", json=body, headers=AUTH)
            assert hit.headers["x-gatewayz-cache"] == "hit"
            assert hit.json() == miss.json()
        assert cluster.books()["charged"] == charged
        assert cluster.metric("cache_size_bytes", 'cache_name="completions"') > 0

    def test_kill_9_mid_load_and_the_holds_come_back(self, cluster):
        """Replica 2 is SIGKILLed with 20 slow requests in flight: their holds are returned by replicas 0
        and 1 within the hold lease plus a tick, and the books balance again."""
        victim = cluster.replicas[2]
        start = cluster.books()

        async def load_then_kill() -> list[BaseException | httpx.Response]:
            limits = httpx.Limits(max_connections=50)
            async with httpx.AsyncClient(timeout=20, limits=limits) as client:
                tasks = [
                    asyncio.create_task(
                        client.post(f"{victim.url}/v1/chat/completions", json=chat("long"), headers=AUTH)
                    )
                    for _ in range(20)
                ]
                deadline = time.monotonic() + 10
                while cluster.books()["holds"] < 20 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert cluster.books()["holds"] == 20
                victim.kill()
                return await asyncio.gather(*tasks, return_exceptions=True)

        results = asyncio.run(load_then_kill())
        assert all(isinstance(result, httpx.HTTPError) for result in results)  # nobody got an answer
        assert cluster.books()["balance"] < start["balance"]  # the dead replica's holds are still out
        killed_at = time.monotonic()
        while cluster.books()["holds"] and time.monotonic() - killed_at < HOLD_SECONDS + 5:
            time.sleep(0.1)
        returned_after = time.monotonic() - killed_at
        after = cluster.books()
        assert after["holds"] == 0
        assert returned_after <= HOLD_SECONDS + 2  # lease + a tick (1/6 of it), with margin for the load
        assert after == {**start, "holds": 0}
        assert cluster.metric("gateway_store_expired_holds_total") == 20

    def test_redis_down_serves_uncached_and_says_so_once(self, cluster):
        """Redis stopped: cacheable requests are still answered (as misses), the skips are counted, the
        outage is logged once per interval, not once per request; Redis back: hits again."""
        live = [replica for replica in cluster.replicas if replica.process.poll() is None]
        body = chat("quick", content=f"redis outage {time.time_ns()}", temperature=0)
        cluster.redis.stop()
        try:
            for _ in range(10):
                for replica in live:
                    response = httpx.post(f"{replica.url}/v1/chat/completions", json=body, headers=AUTH)
                    assert response.status_code == 200
                    assert response.headers["x-gatewayz-cache"] == "miss"
            assert cluster.metric("redis_unavailable_total", 'operation="cache_get"') >= 20
            ready = httpx.get(live[0].url + "/ready")
            assert (ready.status_code, ready.json()["redis"]) == (200, "unavailable")
        finally:
            cluster.redis.start()
        for replica in live:
            warnings = [line for line in replica.stdout_lines() if "Redis unavailable" in line]
            assert 1 <= len(warnings) <= 2, warnings
            assert json.loads(warnings[0])["level"] == "WARNING"
        time.sleep(1.2)  # past the back-off
        httpx.post(f"{live[0].url}/v1/chat/completions", json=body, headers=AUTH)
        again = httpx.post(f"{live[1].url}/v1/chat/completions", json=body, headers=AUTH)
        assert again.headers["x-gatewayz-cache"] == "hit"

    def test_postgres_down_is_503_and_nothing_is_lost_when_it_returns(self, cluster):
        """PostgreSQL stopped: /ready 503, /v1/chat/completions 503 in OpenAI's shape (nothing charged);
        started again: requests are served and charged once, and the books balance."""
        live = [replica for replica in cluster.replicas if replica.process.poll() is None]
        start = cluster.books()
        cluster.postgres.stop()
        try:
            for replica in live:
                assert httpx.get(replica.url + "/ready", timeout=10).status_code == 503
                response = httpx.post(
                    f"{replica.url}/v1/chat/completions", json=chat("quick"), headers=AUTH, timeout=10
                )
                assert response.status_code == 503
                error = response.json()["error"]
                assert (error["type"], error["code"]) == ("server_error", "store_unavailable")
                assert response.headers["retry-after"]
        finally:
            cluster.postgres.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if all(httpx.get(replica.url + "/ready").status_code == 200 for replica in live):
                break
            time.sleep(0.2)
        responses = asyncio.run(fire([replica.url for replica in live], [chat("quick") for _ in range(10)]))
        assert [response.status_code for response in responses] == [200] * 10
        after = cluster.books()
        assert after["holds"] == 0
        assert after["charged"] - start["charged"] == sum(cost_micros(response) for response in responses)
        assert after["balance"] + after["charged"] == round(START_CREDITS * 1_000_000)
        assert cluster.metric("gateway_store_errors_total", 'operation="reserve"') >= len(live)


class TestStartup:
    def test_an_unreachable_database_stops_startup_naming_the_variable(self, tmp_path):
        """Nothing listening at DATABASE_URL: after GATEWAY_DB_CONNECT_SECONDS the process exits, saying
        which variable to fix, and never prints the password."""
        url = f"postgresql://gatewayz:hunter2secret@127.0.0.1:{free_port()}/gatewayz"
        process = ServiceProcess(
            "gateway",
            {
                "DATABASE_URL": url,
                "GATEWAY_DB_CONNECT_SECONDS": "1",
                "GATEWAY_DB_PATH": str(tmp_path / "x.db"),
            },
            tmp_path,
        )
        with pytest.raises(RuntimeError, match="exited 3") as caught:
            process.start(ready_path="/ready", timeout=30)
        message = str(caught.value)
        assert "configuration error: DATABASE_URL: PostgreSQL did not answer" in message
        assert "hunter2secret" not in message + "\n".join(process.stdout_lines())
