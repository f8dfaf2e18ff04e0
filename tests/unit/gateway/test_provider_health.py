"""Provider health over a rolling window, and the router preferring available providers."""

from __future__ import annotations

from gateway_testing import Clock

from gateway.providers.catalog import load_catalog
from gateway.providers.health import ProviderHealth
from gateway.providers.router import Router


class TestProviderHealth:
    def test_empty_window_is_available(self):
        """A provider not called lately counts as available with no errors."""
        health = ProviderHealth(60, Clock())
        assert (health.availability(), health.error_rate(), health.response_time()) == (1.0, 0.0, 0.0)

    def test_rates_over_the_window(self):
        """One failure in four calls: error rate 0.25, mean of the four durations, still available."""
        health = ProviderHealth(60, Clock())
        for ok, seconds in ((True, 1.0), (True, 2.0), (False, 3.0), (True, 2.0)):
            health.record(ok=ok, seconds=seconds)
        assert health.error_rate() == 0.25
        assert health.response_time() == 2.0
        assert health.availability() == 1.0

    def test_all_failures_is_unavailable_until_they_age_out(self):
        """Only failures in the window: unavailable; once they leave it, available again."""
        clock = Clock()
        health = ProviderHealth(60, clock)
        health.record(ok=False, seconds=0.1)
        health.record(ok=False, seconds=0.1)
        assert health.availability() == 0.0
        clock.now += 61
        assert health.availability() == 1.0
        assert health.error_rate() == 0.0


class TestRouterOrder:
    def test_unavailable_providers_go_last(self):
        """With its first provider failing everything, a model is routed to the second first."""
        catalog = load_catalog()
        health = {provider.name: ProviderHealth(60, Clock()) for provider in catalog.providers}
        router = Router({}, health, metrics=None, tracer=None)
        routes = catalog.routes_for("gatewayz-flaky")
        assert [route.provider.name for route in router.order(routes)] == ["local", "local-backup"]
        health["local"].record(ok=False, seconds=0.1)
        assert [route.provider.name for route in router.order(routes)] == ["local-backup", "local"]
