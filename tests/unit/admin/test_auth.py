"""The admin key guard: the auth matrix, the failed-attempt limit, and the key never echoed or logged."""

from __future__ import annotations

import pytest

from admin.auth import GENERATE_KEY_HINT
from support.admin_app import ADMIN_KEY, BEARER
from support.processes import free_port

ADMIN_ENDPOINTS = [
    ("GET", "/api/instrumentation/loki/status"),
    ("GET", "/api/instrumentation/tempo/status"),
    ("GET", "/api/instrumentation/config"),
    ("POST", "/api/instrumentation/test-trace"),
    ("POST", "/api/instrumentation/test-log"),
    ("GET", "/api/instrumentation/environment-variables"),
]


class TestAuthMatrix:
    """Each case runs over every admin endpoint (one app per case keeps the suite fast)."""

    def test_no_key_is_401(self, admin):
        """Without an Authorization header every admin endpoint answers 401 in the error shape."""
        for method, path in ADMIN_ENDPOINTS:
            response = admin.request(method, path)
            assert response.status_code == 401, path
            assert response.json()["error"]["type"] == "authentication_error"
            assert response.headers["www-authenticate"].startswith("Bearer")

    def test_wrong_key_is_401(self, admin):
        """A wrong Bearer key answers 401 on every admin endpoint."""
        for method, path in ADMIN_ENDPOINTS:
            response = admin.request(method, path, headers={"Authorization": "Bearer not-the-key"})
            assert response.status_code == 401, path
            assert response.json()["error"]["message"] == "invalid admin key"

    def test_right_key_is_200(self, admin):
        """The configured key opens every admin endpoint."""
        for method, path in ADMIN_ENDPOINTS:
            assert admin.request(method, path, headers=BEARER).status_code == 200, path

    def test_no_key_configured_is_503_never_open(self, make_admin):
        """With ADMIN_API_KEY unset every admin endpoint refuses every caller and says how to set a key."""
        client = make_admin(admin_api_key=None)
        for method, path in ADMIN_ENDPOINTS:
            for headers in ({}, BEARER, {"Authorization": "Bearer "}):
                response = client.request(method, path, headers=headers)
                assert response.status_code == 503, path
                assert response.json()["error"]["message"] == GENERATE_KEY_HINT
        assert "ADMIN_API_KEY" in GENERATE_KEY_HINT


class TestBearerParsing:
    def test_scheme_is_case_insensitive(self, admin):
        """`bearer <key>` is accepted like `Bearer <key>`."""
        response = admin.get("/api/instrumentation/config", headers={"Authorization": f"bearer {ADMIN_KEY}"})
        assert response.status_code == 200

    @pytest.mark.parametrize(
        "header", [ADMIN_KEY, f"Basic {ADMIN_KEY}", f"Bearer {ADMIN_KEY}x", f"Bearer {ADMIN_KEY[:-1]}"]
    )
    def test_near_misses_are_401(self, admin, header):
        """The bare key, another scheme, or a key one character off are all refused."""
        assert admin.get("/api/instrumentation/config", headers={"Authorization": header}).status_code == 401

    def test_public_endpoints_need_no_key(self, admin):
        """Endpoints SPEC §6 leaves open answer without a key."""
        for path in (
            "/api/metrics/status",
            "/api/instrumentation/trace-context",
            "/api/metrics/grafana-queries",
        ):
            assert admin.get(path).status_code == 200


class TestFailedAttemptLimit:
    def test_eleventh_failure_in_a_minute_is_429_with_retry_after(self, admin):
        """Ten wrong keys get 401; the next attempt, even with the right key, gets 429 and Retry-After."""
        wrong = {"Authorization": "Bearer wrong"}
        for _ in range(10):
            assert admin.get("/api/instrumentation/config", headers=wrong).status_code == 401
        response = admin.get("/api/instrumentation/config", headers=BEARER)
        assert response.status_code == 429
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.json()["error"]["type"] == "rate_limit_error"

    def test_successes_do_not_count(self, admin):
        """Many successful calls never trigger the limit."""
        for _ in range(15):
            assert admin.get("/api/instrumentation/config", headers=BEARER).status_code == 200


class TestKeyNeverLeaks:
    def test_key_not_in_responses_or_logs(self, admin, log_capture):
        """Neither the right key nor a wrong one presented appears in any response or log line."""
        bodies = [admin.get("/api/instrumentation/config", headers=BEARER).text]
        bodies.append(
            admin.get("/api/instrumentation/config", headers={"Authorization": "Bearer guess-1234"}).text
        )
        bodies.append(admin.get("/api/instrumentation/environment-variables", headers=BEARER).text)
        logged = log_capture.getvalue().decode()
        assert "Admin authentication failed" in logged
        for text in [*bodies, logged]:
            assert ADMIN_KEY not in text
            assert "guess-1234" not in text


class TestSharedFailedAttemptLimit:
    """With REDIS_URL, every admin replica counts the same failures (Debian's redis-server, private)."""

    def test_two_replicas_share_one_limit(self, make_admin, redis_server):
        """Five failures on each of two replicas exhaust the limit of ten on both."""
        redis_server.flush()
        first, second = (make_admin(redis_url=redis_server.url()) for _ in range(2))
        wrong = {"Authorization": "Bearer wrong"}
        for replica in (first, second):
            for _ in range(5):
                assert replica.get("/api/instrumentation/config", headers=wrong).status_code == 401
        for replica in (first, second):
            response = replica.get("/api/instrumentation/config", headers=BEARER)
            assert response.status_code == 429
            assert 1 <= int(response.headers["retry-after"]) <= 60

    def test_redis_down_falls_back_to_each_replicas_own_limit(self, make_admin):
        """Redis unreachable: the limit still holds, per replica, and is counted as degraded."""
        admin = make_admin(redis_url=f"redis://127.0.0.1:{free_port()}/0")
        wrong = {"Authorization": "Bearer wrong"}
        for _ in range(10):
            assert admin.get("/api/instrumentation/config", headers=wrong).status_code == 401
        assert admin.get("/api/instrumentation/config", headers=BEARER).status_code == 429
        registry = admin.app.state.admin.telemetry.registry
        assert registry.get_sample_value("redis_unavailable_total", {"operation": "failed_auth"}) >= 1
