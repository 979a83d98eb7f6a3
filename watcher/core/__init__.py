"""Pure decisions and the domain model: no I/O, no clock, nothing else of ours imported."""
