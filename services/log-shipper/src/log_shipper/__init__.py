"""Gatewayz log-shipper service."""
