"""The durable state: snapshots, the transition log and the outbox."""
