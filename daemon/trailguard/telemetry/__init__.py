"""Logs (structlog) and, with the daemon, Prometheus metrics and health."""
