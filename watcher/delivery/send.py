"""The send stage: one batch of outbox rows to one sink, and the sink's answer back.

It reads the batch's transitions from the store and hands them to the sink with each route's
presentation. It returns the sink's ``SinkError`` instead of raising it, so the caller has to
record the outcome either way. It must not write the outbox, retry, or wait: a send is one
attempt, and what its outcome means is the record stage's business.
"""

from __future__ import annotations

from collections.abc import Sequence

from watcher.delivery.sinks.base import Outgoing, Sink, SinkError
from watcher.store.protocols import OutboxStore
from watcher.store.records import OutboxRow


async def send(store: OutboxStore, sink: Sink, batch: Sequence[OutboxRow]) -> SinkError | None:
    """Deliver ``batch`` through ``sink``: ``None`` if it was delivered, else why not.

    A ``StateStoreError`` from reading the transitions propagates: nothing was sent, and the
    rows stay pending for the next pass.
    """
    transitions = await store.load_transitions([row.transition_id for row in batch])
    outgoing = [Outgoing(transitions[r.transition_id], r.severity, r.template) for r in batch]
    try:
        await sink.send(outgoing)
    except SinkError as exc:
        return exc
    return None
