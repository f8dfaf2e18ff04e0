"""Cardinality: floods of random 404 paths and unknown model names add no series to the gateway's /metrics.

Before the flood, one request of each kind (a 404 path, an unknown model, an odd method) creates the fixed
series they share (`path="<unmatched>"`, `model="other"`, `method="OTHER"`); after 10,000 of each, the set of
series must be exactly the same, and no value a client chose may appear in the exposition.
"""

from __future__ import annotations

import random
import string

import httpx
import pytest

from reliability.budget import pick, record
from reliability.load import run_load, series
from reliability.stack import chat, fake_key, gateway

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
