"""Keys with budgets, rate limits and allow-lists, over loopback with real gateway processes.

One gateway on SQLite (`python -m gateway`, as users start it): the key lifecycle, the budget's exact
boundary, rpm/tpm 429s with their headers and Retry-After, the allow-list 403, what /metrics and the log lines
show. Two replicas on one PostgreSQL and one Redis (Debian's, private): N requests across both never exceed a
key's rpm or budget, and a key revoked on one replica is refused by the other at once.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from support.processes import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

USER_KEY = "test-keys-demo-user-key"
ADMIN_KEY = "test-keys-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# 1,000 micro-credits per token either way, no latency: a request's worst case and cost are exact integers.
CATALOG = """
[[providers]]
name = "local"
kind = "local"

[[providers.models]]
id = "exact"
prompt_price = 0.001
completion_price = 0.001
max_output_tokens = 64
latency_ms = 0

[[providers.models]]
id = "other"
prompt_price = 0.001
completion_price = 0.001
max_output_tokens = 64
latency_ms = 0
"""
CONTENT = "what do the keys allow today"
MAX_TOKENS = 10  # below every local reply's natural length: the completion is exactly this long


def chat(model: str = "exact", content: str = CONTENT, **extra: object) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": MAX_TOKENS,
        **extra,
    }


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def gateway(root: Path, name: str, **env: str) -> ServiceProcess:
    directory = root / name
    directory.mkdir()
    catalog = directory / "providers.toml"
    catalog.write_text(CATALOG)
    return ServiceProcess(
        "gateway",
        {
            "GATEWAY_PROVIDERS_FILE": str(catalog),
            "GATEWAY_DB_PATH": str(directory / "gateway.db"),
            "GATEWAY_BOOTSTRAP_API_KEY": USER_KEY,
            "GATEWAY_DEMO_CREDITS": "1000",
            "ADMIN_API_KEY": ADMIN_KEY,
            **env,
        },
        directory,
    )


def create_key(url: str, **fields: object) -> tuple[dict, str]:
    response = httpx.post(f"{url}/api/keys", json={"user_id": 1, **fields}, headers=ADMIN)
    assert response.status_code == 201, response.text
    body = response.json()
    return body, body["key"]


def metric(url: str, name: str, labels: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(f"{name}{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def log_lines(process: ServiceProcess, message: str) -> list[dict]:
    lines = []
    for raw in process.stdout_lines():
        if f'"message":"{message}"' in raw:
            lines.append(json.loads(raw))
    return lines


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = gateway(tmp_path_factory.mktemp("keys"), "sqlite").start(ready_path="/ready")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def worst_case(single) -> int:
    """Micro-credits one `chat()` reserves and costs: (prompt + MAX_TOKENS) tokens x 1,000."""
    usage = httpx.post(f"{single.url}/v1/chat/completions", json=chat(), headers=bearer(USER_KEY)).json()[
        "usage"
    ]
    assert usage["completion_tokens"] == MAX_TOKENS
    return (usage["prompt_tokens"] + MAX_TOKENS) * 1_000


class TestOneGateway:
    def test_lifecycle_create_use_update_revoke(self, single):
        """Create a key (shown once), use it, raise its limit, read its spend, revoke it: refused at once."""
        record, key = create_key(single.url, alias="lifecycle", rpm=1)
        assert (
            httpx.post(f"{single.url}/v1/chat/completions", json=chat(), headers=bearer(key)).status_code
            == 200
        )
        assert (
            httpx.post(f"{single.url}/v1/chat/completions", json=chat(), headers=bearer(key)).status_code
            == 429
        )
        patched = httpx.patch(f"{single.url}/api/keys/{record['id']}", json={"rpm": 100}, headers=ADMIN)
        assert patched.json()["rpm"] == 100
        assert (
            httpx.post(f"{single.url}/v1/chat/completions", json=chat(), headers=bearer(key)).status_code
            == 200
        )
        shown = httpx.get(f"{single.url}/api/keys/{record['id']}", headers=ADMIN).json()
        assert shown["spend"] > 0
        assert shown["last_used_at"] is not None
        assert "key" not in shown
        assert httpx.delete(f"{single.url}/api/keys/{record['id']}", headers=ADMIN).status_code == 200
        refused = httpx.post(f"{single.url}/v1/chat/completions", json=chat(), headers=bearer(key))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "api_key_revoked"
        assert httpx.get(f"{single.url}/v1/models", headers=bearer(key)).status_code == 401
        # The inference lines name the key by alias and id; the key itself is nowhere in the output.
        lines = [
            line for line in log_lines(single, "Inference completed") if line.get("key_alias") == "lifecycle"
        ]
        assert len(lines) == 2
        assert {line["key_id"] for line in lines} == {record["id"]}
        assert key not in "\n".join(single.stdout_lines())

    def test_budget_402_at_the_exact_boundary(self, single, worst_case):
        """Budget = 3 worst cases: three answers, the fourth 402; budget one micro-credit short of 3: the
        third is already 402. The spend shown is exactly what was charged."""
        record, key = create_key(single.url, alias="budget-exact", budget=3 * worst_case / 1e6)
        statuses = [
            httpx.post(f"{single.url}/v1/chat/completions", json=chat(), headers=bearer(key)).status_code
            for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 402]
        assert httpx.get(f"{single.url}/api/keys/{record['id']}", headers=ADMIN).json()[
            "spend"
        ] == pytest.approx(3 * worst_case / 1e6, abs=1e-9)
        _, short = create_key(single.url, alias="budget-short", budget=(3 * worst_case - 1) / 1e6)
        responses = [
            httpx.post(f"{single.url}/v1/chat/completions", json=chat(), headers=bearer(short))
            for _ in range(3)
        ]
        assert [r.status_code for r in responses] == [200, 200, 402]
        assert responses[-1].json()["error"]["code"] == "budget_exceeded"
        assert metric(single.url, "gateway_limit_rejections_total", 'reason="budget_exceeded"') == 2

    def test_rpm_429_headers_and_retry_after(self, single):
        """rpm 3: x-ratelimit-* on each answer counting down, then 429 with Retry-After ~20 s (a request
        refills every 60/3 s) and the same headers."""
        _, key = create_key(single.url, alias="rpm-three", rpm=3)
        answers = [
            httpx.post(f"{single.url}/v1/chat/completions", json=chat(), headers=bearer(key))
            for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["x-ratelimit-limit-requests"] for a in answers] == ["3"] * 4
        assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0", "0"]
        assert "x-ratelimit-limit-tokens" not in answers[0].headers
        limited = answers[-1]
        assert 19 <= int(limited.headers["retry-after"]) <= 20
        assert limited.json()["error"]["type"] == "requests"
        reset = limited.headers["x-ratelimit-reset-requests"]
        assert reset.endswith("s")
        assert "m" not in reset  # under a minute: e.g. "59.9s"

    def test_tpm_429_on_tokens(self, single, worst_case):
        """tpm of 2.5 worst cases: two fit, the third is refused on tokens with the tokens headers; a
        stream of the key carries them too."""
        tokens = worst_case // 1_000
        _, key = create_key(single.url, alias="tpm-two", tpm=tokens * 5 // 2)
        first = httpx.post(f"{single.url}/v1/chat/completions", json=chat(stream=True), headers=bearer(key))
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/event-stream")
        assert int(first.headers["x-ratelimit-remaining-tokens"]) == tokens * 5 // 2 - tokens
        second = httpx.post(f"{single.url}/v1/chat/completions", json=chat(), headers=bearer(key))
        assert second.status_code == 200
        third = httpx.post(f"{single.url}/v1/chat/completions", json=chat(), headers=bearer(key))
        assert third.status_code == 429
        assert third.json()["error"]["type"] == "tokens"
        assert third.headers["x-ratelimit-limit-tokens"] == str(tokens * 5 // 2)
        assert int(third.headers["retry-after"]) >= 1

    def test_allow_list_403(self, single):
        """A key limited to `exact` is refused `other` (403), counted and logged with its alias."""
        _, key = create_key(single.url, alias="only-exact", models=["exact"])
        assert (
            httpx.post(f"{single.url}/v1/chat/completions", json=chat(), headers=bearer(key)).status_code
            == 200
        )
        refused = httpx.post(f"{single.url}/v1/chat/completions", json=chat("other"), headers=bearer(key))
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "model_not_allowed"
        assert metric(single.url, "gateway_limit_rejections_total", 'reason="model_not_allowed"') == 1
        (line,) = [line for line in log_lines(single, "Request refused") if line["key_alias"] == "only-exact"]
        assert (line["reason"], line["status_code"], line["model"]) == ("model_not_allowed", 403, "other")

    def test_metrics_carry_no_key(self, single):
        """No alias or key id is a label anywhere in /metrics."""
        text = httpx.get(single.url + "/metrics").text
        assert "key_alias" not in text
        for alias in ("lifecycle", "budget-exact", "rpm-three", "only-exact"):
            assert alias not in text


class Replicas:
    """Two gateway replicas on one PostgreSQL database and one Redis."""

    def __init__(self, root: Path, database_url: str, redis_url: str) -> None:
        self.replicas = [
            gateway(root, f"replica-{index}", DATABASE_URL=database_url, REDIS_URL=redis_url)
            for index in range(2)
        ]

    def start(self) -> Replicas:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda replica: replica.start(ready_path="/ready"), self.replicas))
        return self

    @property
    def urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, postgres, redis_server) -> Iterator[Replicas]:
    cluster = Replicas(
        tmp_path_factory.mktemp("keys-replicas"), postgres.create_database("keys"), redis_server.url(5)
    ).start()
    yield cluster
    cluster.stop()


async def spread(
    urls: list[str], count: int, key: str, body: dict | None = None
) -> tuple[list[httpx.Response], float]:
    """`count` requests at once, round-robin over the replicas; the responses and the seconds they took."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        started = time.monotonic()
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{urls[index % len(urls)]}/v1/chat/completions", json=body or chat(), headers=bearer(key)
                )
                for index in range(count)
            )
        )
        return list(responses), time.monotonic() - started


class TestReplicas:
    def test_rpm_holds_across_two_replicas(self, replicas):
        """rpm 20, 80 requests at once over both replicas: never more admitted than the bucket allows (20
        plus what refilled while they ran); every 429 carries Retry-After and the headers."""
        _, key = create_key(replicas.urls[0], alias="shared-rpm", rpm=20)
        responses, elapsed = asyncio.run(spread(replicas.urls, 80, key))
        admitted = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 429]
        assert len(admitted) + len(refused) == 80, {r.status_code for r in responses}
        assert 20 <= len(admitted) <= 20 + math.floor(elapsed * 20 / 60), elapsed
        assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
        assert all(r.headers["x-ratelimit-limit-requests"] == "20" for r in responses)

    def test_budget_holds_across_two_replicas(self, replicas):
        """A budget of 5 worst cases, 30 requests at once over both replicas: exactly 5 answered, the rest
        402, and the key's spend is exactly 5 worst cases."""
        usage = httpx.post(
            f"{replicas.urls[1]}/v1/chat/completions", json=chat(), headers=bearer(USER_KEY)
        ).json()["usage"]
        worst = (usage["prompt_tokens"] + MAX_TOKENS) * 1_000
        record, key = create_key(replicas.urls[1], alias="shared-budget", budget=5 * worst / 1e6)
        responses, _ = asyncio.run(spread(replicas.urls, 30, key))
        assert sorted(r.status_code for r in responses) == [200] * 5 + [402] * 25
        shown = httpx.get(f"{replicas.urls[0]}/api/keys/{record['id']}", headers=ADMIN).json()
        assert shown["spend"] == pytest.approx(5 * worst / 1e6, abs=1e-9)

    def test_a_key_revoked_on_one_replica_is_refused_by_the_other_at_once(self, replicas):
        """Replica B has the key in memory; A revokes it; B's very next request is 401 (NOTIFY, and the
        reservation's own check)."""
        a, b = replicas.urls
        record, key = create_key(a, alias="revoke-across", rpm=1000)
        for _ in range(3):
            assert httpx.post(f"{b}/v1/chat/completions", json=chat(), headers=bearer(key)).status_code == 200
        assert httpx.delete(f"{a}/api/keys/{record['id']}", headers=ADMIN).status_code == 200
        refused = httpx.post(f"{b}/v1/chat/completions", json=chat(), headers=bearer(key))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "api_key_revoked"
        assert httpx.get(f"{b}/v1/models", headers=bearer(key)).status_code == 401

    def test_a_limit_raised_on_one_replica_applies_on_the_other(self, replicas):
        """PATCH on A; the next request on B uses the new allow-list."""
        a, b = replicas.urls
        record, key = create_key(a, alias="patch-across", models=["exact"])
        assert (
            httpx.post(f"{b}/v1/chat/completions", json=chat("other"), headers=bearer(key)).status_code == 403
        )
        httpx.patch(f"{a}/api/keys/{record['id']}", json={"models": ["exact", "other"]}, headers=ADMIN)
        assert (
            httpx.post(f"{b}/v1/chat/completions", json=chat("other"), headers=bearer(key)).status_code == 200
        )
