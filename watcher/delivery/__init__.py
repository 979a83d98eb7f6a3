"""Delivery of committed transitions: the outbox dispatcher and its sinks."""
