"""Gatewayz log-shipper: JSON log lines from stdin, files and HTTP into Loki, at least once."""
