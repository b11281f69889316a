"""The worker's rules wired together over one consumer, ledger and flusher.

The worker wires its units here, and so do the unit tests (over an in-memory consumer, ledger and
flusher), so what the tests exercise is the wiring that runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from mds_sink.config.settings import Settings
from mds_sink.core.batcher import Batcher, TopicPartition
from mds_sink.kafka.consumer import Consumer
from mds_sink.sink.backpressure import Pauses
from mds_sink.sink.commits import Commits, Flush
from mds_sink.sink.control import SinkState
from mds_sink.sink.ownership import Ownership
from mds_sink.sink.rebalance import Ledger, Rebalance


@dataclass(frozen=True, slots=True)
class Units:
    ownership: Ownership  # which partitions are owned, under which epoch
    pauses: Pauses  # what is paused at the client, and why
    commits: Commits  # settled batches committed, in order
    rebalance: Rebalance  # the consumer's rebalance callbacks, and claims made later

    def subscribe(self, consumer: Consumer, topics: list[str]) -> None:
        r = self.rebalance
        consumer.subscribe(topics, on_assign=r.on_assign, on_revoke=r.on_revoke, on_lost=r.on_lost)


def wire(
    settings: Settings,
    consumer: Consumer,
    ledger: Ledger,
    flusher: Flush,
    batcher: Batcher,
    state: SinkState,
    *,
    publish: Callable[[], None],
    forget: Callable[[set[TopicPartition]], None] = lambda _tps: None,
    sleep: Callable[[float], None] = time.sleep,
    protocol: str = "classic",
) -> Units:
    """`publish` replaces the status snapshot after a change; `forget` drops what the status reports of
    partitions that moved away; `protocol` is the group protocol the consumer joined with."""
    owned = Ownership()
    pauses = Pauses(
        consumer, owned, batcher, flusher, max_buffered=settings.batching.max_buffered_records, publish=publish
    )
    commits = Commits(consumer, owned, flusher, batcher, publish=publish, beat=state.beat)
    rebalance = Rebalance(
        consumer,
        ledger,
        owned,
        commits=commits,
        pauses=pauses,
        batcher=batcher,
        flusher=flusher,
        state=state,
        # The consumer protocol is incremental like cooperative-sticky: only what moves is revoked or assigned.
        cooperative=protocol == "consumer" or settings.kafka.assignment_strategy == "cooperative-sticky",
        claim_wait_s=settings.database.connect_timeout_s,
        drain_deadline_s=settings.shutdown_deadline_s,
        publish=publish,
        forget=forget,
        sleep=sleep,
    )
    return Units(owned, pauses, commits, rebalance)
