"""Delivery of committed transitions, in stages: select, hold, send, record; the dispatcher
chains them per sink, and ``sinks`` holds the destinations."""
