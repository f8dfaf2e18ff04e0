"""HTTP route handlers of the admin service."""
