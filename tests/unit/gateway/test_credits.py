"""Credits through the app: tokens x price charged exactly, reservations, 402, usage, free cache hits."""

from __future__ import annotations

import msgspec
from gateway_testing import AUTH, USER_KEY, chat

from support.fake_upstream import USAGE

URL = "/v1/chat/completions"


def balance(client) -> float:
    return client.get("/api/users/1", headers=AUTH).json()["credits"]


class TestCharging:
    def test_upstream_usage_is_charged_at_catalog_prices(self, client):
        """credits = prompt x 0.5 + completion x 0.25 from the upstream's own usage."""
        before = balance(client)
        assert client.post(URL, json=chat("up-ok"), headers=AUTH).status_code == 200
        expected = USAGE["prompt_tokens"] * 0.5 + USAGE["completion_tokens"] * 0.25
        assert balance(client) == before - expected

    def test_local_usage_is_charged_and_recorded_by_model(self, client):
        """A local completion is charged from its reported usage and shows up in usage by model."""
        usage = client.post(URL, json=chat("echo"), headers=AUTH).json()["usage"]
        cost = usage["prompt_tokens"] * 0.5 + usage["completion_tokens"] * 0.25
        profile = client.get("/api/users/1", headers=AUTH).json()
        assert profile["credits"] == 1000.0 - cost
        assert profile["usage"] == [
            {
                "model": "echo",
                "requests": 1,
                "prompt_tokens": usage["prompt_tokens"],
                "completion_tokens": usage["completion_tokens"],
                "credits": cost,
            }
        ]

    def test_stream_is_charged_when_it_ends(self, client):
        """A relayed stream is charged from the usage its upstream reported."""
        before = balance(client)
        client.post(URL, json=chat("up-ok", stream=True), headers=AUTH)
        assert balance(client) == before - (11 * 0.5 + 7 * 0.25)

    def test_failed_call_costs_nothing(self, client):
        """A 5xx, a timeout or an unknown model gives the reservation back whole."""
        before = balance(client)
        assert client.post(URL, json=chat("up-500"), headers=AUTH).status_code == 502
        assert client.post(URL, json=chat("up-slow"), headers=AUTH).status_code == 504
        assert client.post(URL, json=chat("nope"), headers=AUTH).status_code == 404
        assert balance(client) == before


class TestInsufficientCredits:
    def test_402_when_the_reservation_does_not_fit(self, make_client, test_settings):
        """A balance below the request's worst case is a 402 and nothing is charged."""
        client = make_client(msgspec.structs.replace(test_settings, gateway_demo_credits=5.0))
        # worst case for echo: 9 prompt tokens x 0.5 + 64 completion tokens x 0.25 = 20.5 credits
        response = client.post(URL, json=chat("echo"), headers=AUTH)
        assert response.status_code == 402
        assert response.json()["error"] == {
            "message": response.json()["error"]["message"],
            "type": "insufficient_credits",
            "code": "insufficient_credits",
        }
        assert balance(client) == 5.0

    def test_max_tokens_lowers_the_reservation(self, make_client, test_settings):
        """With `max_tokens` the worst case shrinks, so a small balance still gets an answer."""
        client = make_client(msgspec.structs.replace(test_settings, gateway_demo_credits=5.0))
        # 9 x 0.5 + 2 x 0.25 = 5.0 credits: exactly the balance
        response = client.post(URL, json=chat("echo", max_tokens=2), headers=AUTH)
        assert response.status_code == 200
        assert balance(client) == 0.0


class TestCacheIsFree:
    def test_hit_costs_no_credits_and_no_provider_call(self, client, upstream):
        """The second identical temperature-0 request is a hit: same body, no charge, no upstream request."""
        body = chat("up-ok", temperature=0)
        first = client.post(URL, json=body, headers=AUTH)
        calls, after_first = len(upstream.requests), balance(client)
        second = client.post(URL, json=body, headers=AUTH)
        assert (first.headers["x-gatewayz-cache"], second.headers["x-gatewayz-cache"]) == ("miss", "hit")
        assert second.content == first.content
        assert len(upstream.requests) == calls
        assert balance(client) == after_first

    def test_opt_in_header_makes_nonzero_temperature_cacheable(self, client):
        """`X-Gatewayz-Cache: true` caches a request whose temperature is not 0."""
        body = chat("echo", temperature=0.7)
        headers = {**AUTH, "X-Gatewayz-Cache": "true"}
        client.post(URL, json=body, headers=headers)
        assert client.post(URL, json=body, headers=headers).headers["x-gatewayz-cache"] == "hit"
        assert client.post(URL, json=body, headers=AUTH).headers["x-gatewayz-cache"] == "miss"

    def test_other_parameters_miss(self, client):
        """A different parameter is a different request."""
        client.post(URL, json=chat("echo", temperature=0), headers=AUTH)
        response = client.post(URL, json=chat("echo", temperature=0, max_tokens=3), headers=AUTH)
        assert response.headers["x-gatewayz-cache"] == "miss"

    def test_key_is_not_in_the_cache_key(self, client):
        """Who asks does not matter; the cached answer is the request's."""
        assert USER_KEY not in client.post(URL, json=chat("echo", temperature=0), headers=AUTH).text
