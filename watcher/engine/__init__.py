"""Polling: the scheduler, one poll, the shared API limiter, the tracked sources."""
