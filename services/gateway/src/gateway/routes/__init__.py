"""HTTP route handlers of the gateway."""
