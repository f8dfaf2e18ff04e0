"""Cardinality: floods of random 404 paths, unknown model names and key aliases add no series to /metrics.

Before the flood, one request of each kind (a 404 path, an unknown model, an odd method) creates the fixed
series they share (`path="<unmatched>"`, `model="other"`, `method="OTHER"`); after 10,000 of each, the set of
series must be exactly the same, and no value a client chose may appear in the exposition.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import string
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from gateway.store import UserStore, generate_key
from reliability.budget import pick, record
from reliability.load import run_load, series
from reliability.stack import FAST_MODEL, chat, fake_key, gateway

PATHS = 10_000
MODELS = 10_000
CONCURRENCY = 16
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "PROPFIND", "BREW")
"""The standard methods, one uvicorn passes on as non-standard (`OTHER`) and one it refuses itself (400)."""

pytestmark = [pytest.mark.integration, pytest.mark.timeout(pick(240, 600))]


def _random_path(rng: random.Random) -> str:
    """A path no route matches (each segment starts with a letter, so `/api/users/{id:int}` never does)."""
    alphabet = string.ascii_letters + string.digits + "-_.~%"
    depth = rng.randint(1, 5)
    parts = [
        rng.choice(string.ascii_letters) + "".join(rng.choices(alphabet, k=rng.randint(0, 40)))
        for _ in range(depth)
    ]
    prefix = rng.choice(["", "v1/", "api/", "api/users/", "v1/chat/", "metrics/"])
    return "/" + prefix + "/".join(parts).replace("%", "%25")


def test_random_paths_and_models_add_no_series(tmp_path):
    key = fake_key("cardinality")
    rng = random.Random(9)  # noqa: S311 - a reproducible flood, not cryptography
    process = gateway(tmp_path, key).start()
    try:
        with httpx.Client(base_url=process.url, timeout=10) as client:
            # One of each shape first: the fixed shared series exist before the flood.
            # (Litestar answers 405 when only a path parameter's type does not fit another method's route.)
            for method in METHODS:
                assert client.request(method, "/no/such/route").status_code in {400, 404}, method
                assert client.request(method, "/api/users/not-a-number").status_code in {400, 404, 405}
            assert client.get("/api/users/987654").status_code == 404
            method, path, kwargs = chat(key, model="warm-up-unknown-model")
            assert client.request(method, path, **kwargs).status_code == 404
            method, path, kwargs = chat(key)
            assert client.request(method, path, **kwargs).status_code == 200
            before = series(client.get("/metrics").text)

        paths = [_random_path(rng) for _ in range(PATHS)]
        path_flood = run_load(
            process.url,
            lambda i: (METHODS[i % len(METHODS)], paths[i], {}),
            PATHS,
            concurrency=CONCURRENCY,
        )
        models = [
            "".join(rng.choices(string.ascii_letters + string.digits + "-_./:", k=rng.randint(1, 60)))
            for _ in range(MODELS)
        ]
        model_flood = run_load(
            process.url, lambda i: chat(key, model=models[i]), MODELS, concurrency=CONCURRENCY
        )
        text = httpx.get(process.url + "/metrics", timeout=10).text
        after = series(text)
        # Long random values cannot appear by chance: if one is in the exposition, a label took it.
        leaked = [value for value in paths + models if len(value) >= 24 and value in text]

        record(
            "cardinality",
            random_paths=PATHS,
            unknown_models=MODELS,
            path_statuses=dict(path_flood.statuses),
            model_statuses=dict(model_flood.statuses),
            series_before=len(before),
            series_after=len(after),
            new_series=sorted(after - before)[:20],
        )
        assert not path_flood.errors, path_flood.errors
        assert not model_flood.errors, model_flood.errors
        assert path_flood.server_errors == 0, path_flood.statuses
        assert set(model_flood.statuses) == {404}, model_flood.statuses
        assert after == before, sorted(after - before)[:20]
        assert leaked == []
    finally:
        process.stop()


KEYS = 10_000


def _create_keys(db_path: Path, user_key: str, aliases: list[str]) -> list[str]:
    """Every alias as a key of user 1 (rpm 1, FAST_MODEL only; every tenth with a budget of 0), written with
    the store's own code before the gateway starts (10,000 POST /api/keys would take most of the test)."""
    store = UserStore.open(str(db_path))
    try:
        store.ensure_demo_user(1_000_000_000.0, user_key)
        secrets = []
        for index, alias in enumerate(aliases):
            secret = generate_key()
            fields: dict[str, object] = {"alias": alias, "rpm": 1, "models": [FAST_MODEL]}
            if index % 10 == 3:
                fields["budget_micros"] = 0
            store.create_key(1, secret, fields)
            secrets.append(secret)
        return secrets
    finally:
        store.close()


def _raw_chat(secret: str, model: str) -> bytes:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hello"}]}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {secret}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _fire(port: int, requests: list[bytes], connections: int = CONCURRENCY) -> Counter[int]:
    """Each request once over keep-alive connections, answers read by Content-Length: a client that costs
    little next to the gateway (httpx would spend more CPU than the server on this machine's two cores)."""
    statuses: Counter[int] = Counter()
    queue = iter(requests)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in queue:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                statuses[int(head[9:12])] += 1
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                assert length is not None, head
                await reader.readexactly(int(length[1]))
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(connection() for _ in range(connections))), 120)
    return statuses


def test_ten_thousand_key_aliases_add_no_series(tmp_path):
    """10,000 keys, each used once or twice across every refusal kind (403, 429, 402) and success: the
    gateway's series are the same before and after, and no alias is in /metrics (spend by key is LogQL)."""
    key = fake_key("cardinality")
    rng = random.Random(11)  # noqa: S311 - reproducible aliases, not cryptography
    alphabet = string.ascii_letters + string.digits
    aliases = [rng.choice(string.ascii_letters) + "".join(rng.choices(alphabet, k=30)) for _ in range(KEYS)]
    process = gateway(tmp_path, key)
    keys = _create_keys(
        Path(process.env["GATEWAY_DB_PATH"]), key, [f"warm-up-{n}" for n in range(4)] + aliases
    )
    warm, keys = keys[:4], keys[4:]
    process.start()
    try:
        with httpx.Client(base_url=process.url, timeout=10) as client:
            # One of each outcome first: every series they touch exists before the flood.
            for index, secret in enumerate(warm):
                method, path, kwargs = chat(secret, model="other-model" if index == 0 else FAST_MODEL)
                client.request(method, path, **kwargs)
                client.request(method, path, **kwargs)
            before = series(client.get("/metrics").text)

        # A quarter ask for a model outside their allow-list (403); the rest are answered (or 402 for a
        # budget of 0); 500 ask twice, the second time over their rpm of 1 (429).
        requests = [
            _raw_chat(secret, "other-model" if i % 4 == 0 else FAST_MODEL) for i, secret in enumerate(keys)
        ]
        started = time.monotonic()
        first = asyncio.run(_fire(process.port, requests))
        again = asyncio.run(_fire(process.port, [requests[4 * i + 1] for i in range(500)]))
        seconds = time.monotonic() - started
        text = httpx.get(process.url + "/metrics", timeout=10).text
        after = series(text)
        record(
            "key_cardinality",
            keys=KEYS,
            statuses=dict(first + again),
            seconds=round(seconds, 1),
            series_before=len(before),
            series_after=len(after),
            new_series=sorted(after - before)[:20],
        )
        assert sum(first.values()) == KEYS
        assert {200, 402, 403} <= set(first), first
        assert set(again) == {429}, again
        assert after == before, sorted(after - before)[:20]
        assert [alias for alias in aliases if alias in text] == []
    finally:
        process.stop()
