"""The Prometheus metrics that every layer updates."""
