"""Spend and tokens by key are LogQL over the inference lines: evaluated over the lines the gateway wrote,
they agree with what the key API says each key spent, and the fields they read are in every such line."""

from __future__ import annotations

import msgspec
from gateway_testing import ADMIN_KEY, chat

from support.logql import evaluate, parse
from telemetry.queries import (
    REFUSALS_BY_KEY,
    SPEND_BY_KEY,
    TOKENS_BY_KEY,
    TOP_KEYS_BY_SPEND,
    resolve_variables,
)

URL = "/v1/chat/completions"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def entries(log_capture):
    """The captured lines as Loki holds them after the shipper: stream labels service and level."""
    found = []
    for raw in log_capture.getvalue().splitlines():
        line = msgspec.json.decode(raw)
        found.append(({"service": line["service"], "level": line["level"]}, raw.decode()))
    return found


def by(series, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for labels, value in series.items()}


def test_spend_tokens_and_refusals_by_key_from_the_log_lines(client, log_capture):
    """Two keys spend different amounts (one streams, one is refused a model); the LogQL sums per alias
    equal the spend the key API shows, tokens equal the usage answered, refusals are counted per key."""
    keys = {}
    for alias, extra in (("team-a", {}), ("team-b", {"models": ["echo"]})):
        body = client.post("/api/keys", json={"user_id": 1, "alias": alias, **extra}, headers=ADMIN).json()
        keys[alias] = (body["id"], {"Authorization": f"Bearer {body['key']}"})
    tokens = {"team-a": 0, "team-b": 0}
    for alias, content, stream in (
        ("team-a", "one two three", False),
        ("team-a", "four five", False),
        ("team-a", "six", True),
        ("team-b", "seven eight nine ten", False),
    ):
        extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
        response = client.post(URL, json=chat("echo", content, **extra), headers=keys[alias][1])
        assert response.status_code == 200
        if stream:
            last = [e for e in response.text.split("\n\n") if e.startswith("data: {")][-1]
            usage = msgspec.json.decode(last[len("data: ") :])["usage"]
        else:
            usage = response.json()["usage"]
        tokens[alias] += usage["prompt_tokens"] + usage["completion_tokens"]
    assert client.post(URL, json=chat("shared"), headers=keys["team-b"][1]).status_code == 403

    lines = entries(log_capture)
    spend = by(evaluate(parse(resolve_variables(SPEND_BY_KEY)), lines), "key_alias")
    for alias, (key_id, _) in keys.items():
        shown = client.get(f"/api/keys/{key_id}", headers=ADMIN).json()["spend"]
        assert round(spend[alias], 6) == round(shown, 6) > 0
    assert by(evaluate(parse(resolve_variables(TOKENS_BY_KEY)), lines), "key_alias") == tokens
    top = evaluate(parse(resolve_variables(TOP_KEYS_BY_SPEND)), lines)
    assert [dict(labels)["key_alias"] for labels in top] == sorted(spend, key=spend.get, reverse=True)
    assert {dict(labels)["user_id"] for labels in top} == {"1"}
    refusals = evaluate(parse(resolve_variables(REFUSALS_BY_KEY)), lines)
    assert {tuple(sorted(labels)): value for labels, value in refusals.items()} == {
        (("key_alias", "team-b"), ("reason", "model_not_allowed")): 1.0
    }
