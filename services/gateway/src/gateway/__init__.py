"""Gatewayz gateway: OpenAI-compatible inference with metrics, traces and JSON logs."""
