"""Gatewayz admin service."""
