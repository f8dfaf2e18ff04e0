"""`GET /api/users/{user_id}`: public profile for anyone, balance and usage for the owner or the admin."""

from __future__ import annotations

import msgspec
import pytest
from gateway_testing import ADMIN_KEY, USER_KEY


@pytest.fixture
def other_key(client) -> str:
    """A second user with its own key."""
    store = client.app.state.services.store
    user_id = client.blocking_portal.call(store.create_user, "other", 5.0)
    client.blocking_portal.call(store.add_key, user_id, "test-other-user-key")
    assert user_id == 2
    return "test-other-user-key"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class TestAuthMatrix:
    def test_anonymous_sees_the_public_profile(self, client):
        """No key: 200 with id, username and created_at only."""
        response = client.get("/api/users/1")
        assert response.status_code == 200
        assert set(response.json()) == {"id", "username", "created_at"}

    def test_owner_sees_balance_and_usage(self, client):
        """The user's own key adds credits and usage."""
        body = client.get("/api/users/1", headers=bearer(USER_KEY)).json()
        assert body["credits"] == 1000.0
        assert body["usage"] == []

    def test_admin_sees_any_balance(self, client, other_key):
        """The admin key sees every user's balance."""
        assert client.get("/api/users/2", headers=bearer(ADMIN_KEY)).json()["credits"] == 5.0
        assert client.get("/api/users/1", headers=bearer(ADMIN_KEY)).json()["credits"] == 1000.0

    def test_another_users_key_sees_only_the_public_profile(self, client, other_key):
        """A valid key of someone else does not reveal the balance."""
        response = client.get("/api/users/1", headers=bearer(other_key))
        assert response.status_code == 200
        assert "credits" not in response.json()

    def test_bad_key_is_401(self, client):
        """A key that is neither a user's nor the admin's is refused, not silently ignored."""
        assert client.get("/api/users/1", headers=bearer("test-wrong-key")).status_code == 401

    def test_missing_user_is_404(self, client):
        """No such user: 404 in the error shape, for anyone."""
        response = client.get("/api/users/999", headers=bearer(ADMIN_KEY))
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"

    @pytest.mark.parametrize("user_id", [2**63, 2**63 - 1, -(2**63) - 1, 10**30, 0, -1])
    def test_ids_out_of_range_are_404(self, client, user_id):
        """Ids beyond what SQLite can hold (or that no user has) are a 404, never a 500."""
        response = client.get(f"/api/users/{user_id}", headers=bearer(ADMIN_KEY))
        assert response.status_code == 404

    def test_admin_key_unset_means_no_admin(self, make_client, test_settings):
        """Without ADMIN_API_KEY nobody is admin; an empty bearer is refused."""
        client = make_client(msgspec.structs.replace(test_settings, admin_api_key=None))
        assert client.get("/api/users/1", headers=bearer(ADMIN_KEY)).status_code == 401
        assert client.get("/api/users/1", headers={"Authorization": "Bearer "}).status_code == 401
