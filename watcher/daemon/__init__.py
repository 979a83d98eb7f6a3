"""The running daemon: lifecycle and signals, the composition root, HTTP, metrics, systemd."""
