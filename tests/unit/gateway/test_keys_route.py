"""The key API and what a key's limits do to `POST /v1/chat/completions`, through the app (in process).

Validation and admin-only access of `/api/keys`; the refusals' counter, log line and span event; headers on
each kind of answer. The same behaviour over loopback with real gateway processes (SQLite, and two replicas on
PostgreSQL and Redis) is tests/integration/test_keys.py.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from gateway_testing import ADMIN_KEY, AUTH, chat, sse_events

from gateway.keys import REASONS, REFUSED_EVENT

URL = "/v1/chat/completions"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def create(client, **fields):
    response = client.post("/api/keys", json={"user_id": 1, "alias": "team-a", **fields}, headers=ADMIN)
    assert response.status_code == 201, response.text
    body = response.json()
    return body, {"Authorization": f"Bearer {body['key']}"}


def rejections(telemetry, reason: str) -> float:
    return telemetry.registry.get_sample_value("gateway_limit_rejections_total", {"reason": reason})


class TestKeyApi:
    def test_admin_key_only(self, client, test_settings, monkeypatch):
        """No key or a user's key is 401; with ADMIN_API_KEY unset the API is closed (503), never open."""
        assert client.get("/api/keys").status_code == 401
        assert client.get("/api/keys", headers=AUTH).status_code == 401
        assert client.post("/api/keys", json={"user_id": 1, "alias": "x"}, headers=AUTH).status_code == 401
        services = client.app.state.services
        monkeypatch.setattr(
            client.app.state,
            "services",
            dataclasses.replace(
                services, settings=msgspec.structs.replace(test_settings, admin_api_key=None)
            ),
        )
        response = client.get("/api/keys", headers=ADMIN)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "admin_key_not_configured"

    def test_create_shows_the_key_once_and_listings_never(self, client):
        """201 with `key` (stored hashed); GET lists alias, limits and spend but no key."""
        body, _ = create(client, rpm=5, tpm=100, budget=2.5, budget_period="weekly", models=["echo"])
        assert body["key"].startswith("gw_")
        assert (body["alias"], body["rpm"], body["tpm"], body["budget"]) == ("team-a", 5, 100, 2.5)
        assert body["budget_period"] == "weekly"
        assert body["budget_reset_at"].endswith("Z")
        listed = client.get("/api/keys", headers=ADMIN).json()["data"]
        assert "team-a" in [key["alias"] for key in listed]
        assert body["key"] not in client.get("/api/keys", headers=ADMIN).text
        assert client.get(f"/api/keys/{body['id']}", headers=ADMIN).json()["alias"] == "team-a"
        assert [
            k["alias"] for k in client.get("/api/keys?user_id=1&limit=1", headers=ADMIN).json()["data"]
        ] == [listed[0]["alias"]]
        assert client.get("/api/keys/999999", headers=ADMIN).status_code == 404

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"models": ["echo", "nope"]}, "models: not in the catalog: nope"),
            ({"budget_period": "daily"}, "budget_period: needs a budget"),
            ({"rpm": 0}, "rpm: expected int >= 1"),
            ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at: must be in the future"),
            ({"expires_at": "2031-01-01T00:00:00"}, "expires_at: expected `datetime` with a timezone"),
            ({"alias": "has space"}, "alias: expected str matching regex"),
            ({"surprise": 1}, "surprise: unknown field"),
            ({"user_id": 424242}, "user_id: user 424242 does not exist"),
        ],
    )
    def test_bad_bodies_name_the_field(self, client, fields, message):
        """Each invalid body is a 400 whose message names the field."""
        response = client.post("/api/keys", json={"user_id": 1, "alias": "a", **fields}, headers=ADMIN)
        assert response.status_code == 400
        assert response.json()["error"]["message"].startswith(message.replace("`", "")), response.text

    def test_alias_conflict_is_409(self, client):
        """Two live keys cannot share an alias."""
        create(client)
        response = client.post("/api/keys", json={"user_id": 1, "alias": "team-a"}, headers=ADMIN)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "alias_in_use"

    def test_patch_changes_only_what_is_given_and_null_clears(self, client):
        """PATCH rpm keeps the rest; `null` removes a limit; an unknown key is 404."""
        body, _ = create(client, rpm=5, tpm=100)
        changed = client.patch(f"/api/keys/{body['id']}", json={"rpm": 9}, headers=ADMIN).json()
        assert (changed["rpm"], changed["tpm"]) == (9, 100)
        cleared = client.patch(f"/api/keys/{body['id']}", json={"tpm": None}, headers=ADMIN).json()
        assert (cleared["rpm"], cleared["tpm"]) == (9, None)
        assert client.patch("/api/keys/999999", json={"rpm": 1}, headers=ADMIN).status_code == 404
        bad = client.patch(f"/api/keys/{body['id']}", json={"budget_period": "daily"}, headers=ADMIN)
        assert bad.status_code == 400


class TestEnforcement:
    def test_lifecycle_use_update_revoke(self, client, gateway_telemetry, log_capture):
        """A new key works and is named in the inference line; revoked, it is refused at once (401)."""
        body, headers = create(client)
        assert client.post(URL, json=chat("echo"), headers=headers).status_code == 200
        (line,) = [line for line in log_capture.lines() if line["message"] == "Inference completed"]
        assert (line["key_alias"], line["key_id"], line["user_id"]) == ("team-a", body["id"], 1)
        assert body["key"] not in log_capture.getvalue().decode()
        revoked = client.delete(f"/api/keys/{body['id']}", headers=ADMIN)
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        refused = client.post(URL, json=chat("echo"), headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "api_key_revoked"
        assert client.get("/v1/models", headers=headers).status_code == 401
        assert rejections(gateway_telemetry, "key_revoked") == 1
        listed = client.get(f"/api/keys/{body['id']}", headers=ADMIN).json()
        assert listed["spend"] > 0
        assert listed["last_used_at"] is not None

    def test_expired_key_is_401(self, client, gateway_telemetry):
        """A key past its expiry is refused."""
        soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
        _, headers = create(client, expires_at=soon)
        client.app.state.services.keys._wall = lambda: datetime.now(UTC).timestamp() + 5
        response = client.post(URL, json=chat("echo"), headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "api_key_expired"
        assert rejections(gateway_telemetry, "key_expired") == 1

    def test_allow_list_403_is_counted_logged_and_a_span_event(
        self, client, gateway_telemetry, log_capture, span_exporter
    ):
        """A model outside the allow-list: 403, the counter, one `Request refused` line, a span event."""
        _, headers = create(client, models=["echo"])
        assert client.post(URL, json=chat("echo"), headers=headers).status_code == 200
        response = client.post(URL, json=chat("shared"), headers=headers)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "model_not_allowed"
        assert rejections(gateway_telemetry, "model_not_allowed") == 1
        (line,) = [line for line in log_capture.lines() if line["message"] == "Request refused"]
        assert (line["reason"], line["key_alias"], line["model"], line["level"]) == (
            "model_not_allowed",
            "team-a",
            "shared",
            "WARNING",
        )
        assert len(line["trace_id"]) == 32
        gateway_telemetry.tracer_provider.force_flush()
        server = [s for s in span_exporter.get_finished_spans() if s.name == "POST /v1/chat/completions"][-1]
        (event,) = [e for e in server.events if e.name == REFUSED_EVENT]
        assert event.attributes["gatewayz.refusal.reason"] == "model_not_allowed"
        assert event.attributes["gatewayz.key.alias"] == "team-a"

    def test_rpm_429_with_retry_after_and_headers_on_every_answer(self, client, gateway_telemetry):
        """rpm 2: both answers carry the headers (JSON and SSE), the third is 429 with Retry-After; a 400
        and a 404 of the key carry them too."""
        _, headers = create(client, rpm=2, tpm=10_000)
        first = client.post(URL, json=chat("echo"), headers=headers)
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-limit-tokens"] == "10000"
        assert int(first.headers["x-ratelimit-remaining-tokens"]) == 10_000 - (9 + 64)  # prompt + max output
        assert first.headers["x-ratelimit-reset-requests"].endswith("s")
        streamed = client.post(URL, json=chat("echo", stream=True), headers=headers)
        assert sse_events(streamed.text)[-1] == "[DONE]"
        assert streamed.headers["x-ratelimit-remaining-requests"] == "0"
        limited = client.post(URL, json=chat("echo"), headers=headers)
        assert limited.status_code == 429
        error = limited.json()["error"]
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
        assert 1 <= int(limited.headers["retry-after"]) <= 30
        assert limited.headers["x-ratelimit-remaining-requests"] == "0"
        assert rejections(gateway_telemetry, "rate_limit_requests") == 1
        for body in (b"{", msgspec.json.encode(chat("no-such-model"))):
            other = client.post(URL, content=body, headers=headers)
            assert other.status_code in (400, 404, 429)
            assert other.headers["x-ratelimit-limit-requests"] == "2"

    def test_tpm_429_names_tokens(self, client, gateway_telemetry):
        """tpm 100 with a 73-token worst case: one fits, the second is refused on tokens; a worst case
        larger than the bucket says to lower max_tokens."""
        _, headers = create(client, tpm=100)
        assert client.post(URL, json=chat("echo"), headers=headers).status_code == 200
        refused = client.post(
            URL, json=chat("echo", content="a b c d e f g h i j k l m n o p"), headers=headers
        )
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "tokens"
        assert rejections(gateway_telemetry, "rate_limit_tokens") == 1
        too_large = client.post(URL, json=chat("echo", max_tokens=200), headers=headers)
        assert too_large.status_code == 429
        assert "lower max_tokens" in too_large.json()["error"]["message"]

    def test_tokens_of_a_refused_request_go_back(self, client):
        """A tpm key refused by its budget after admission gets its worst case back (the next request has
        the whole bucket), and a provider failure's tokens go back once, not twice."""
        _, headers = create(client, tpm=1000, budget=1.0)
        for _ in range(3):
            refused = client.post(URL, json=chat("echo"), headers=headers)
            assert refused.status_code == 402
            assert refused.headers["x-ratelimit-remaining-tokens"] == "1000"  # after the give-back
        peek = client.post(URL, content=b"{", headers=headers)
        assert peek.headers["x-ratelimit-remaining-tokens"] == "1000"
        _, broken = create(client, alias="team-broken", tpm=1000)
        used = client.post(URL, json=chat("echo"), headers=broken).json()["usage"]["total_tokens"]
        assert client.post(URL, json=chat("broken"), headers=broken).status_code == 502
        again = client.post(URL, content=b"{", headers=broken)
        assert int(again.headers["x-ratelimit-remaining-tokens"]) in (1000 - used, 1000 - used + 1)

    def test_budget_402_and_credits_402_are_counted_apart(self, client, gateway_telemetry):
        """A key whose budget cannot cover the worst case is 402 budget_exceeded, not the user's credits."""
        _, headers = create(client, budget=1.0)
        refused = client.post(URL, json=chat("echo"), headers=headers)  # worst case 9 x 0.5 + 64 x 0.25
        assert refused.status_code == 402
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert rejections(gateway_telemetry, "budget_exceeded") == 1
        assert rejections(gateway_telemetry, "insufficient_credits") == 0

    def test_every_reason_is_a_series_from_the_start(self, client, gateway_telemetry):
        """All reasons exist at 0 before any refusal (a fixed set, so rate() works from the first one)."""
        assert [rejections(gateway_telemetry, reason) for reason in REASONS] == [0.0] * len(REASONS)
