"""Settlement on the consumer thread: batches handed to the flusher, their offsets committed to Kafka.

For each batch, in the order the flusher settles them:
    1. it is submitted fenced on the epochs its records were read under
    2. the flusher settles it (dead letters acknowledged; rows and ledger in one transaction)
    3. its next offsets are committed to Kafka, for the partitions still owned here, only now
A flush that failed for good stops it: nothing behind it commits, and SinkFailed is raised. A Kafka
commit that fails loses nothing (the ledger holds those offsets) and is retried while still owned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from mds_sink import metrics
from mds_sink.core.batcher import Batcher, TableBatch, TopicPartition
from mds_sink.errors import SinkFailed
from mds_sink.kafka.consumer import Consumer
from mds_sink.sink.flusher import Abandoned, Done, FlushFailed
from mds_sink.sink.ownership import Ownership

log = logging.getLogger(__name__)

# Failed Kafka commits are tried again at most this often.
COMMIT_RETRY_S = 1.0


class Flush(Protocol):
    """The flusher as the consumer thread drives it (sink.flusher.Flusher)."""

    @property
    def pending(self) -> int:
        """Batches submitted and not yet collected."""

    def has_room(self) -> bool: ...

    def submit(self, batch: TableBatch) -> None: ...

    def collect(self, timeout_s: float = ...) -> list[Done]: ...

    def own(self, owned: Mapping[TopicPartition, int]) -> None:
        """The partitions owned now, with their epochs: the flusher writes nothing else."""


class Commits:
    def __init__(
        self,
        consumer: Consumer,
        ownership: Ownership,
        flusher: Flush,
        batcher: Batcher,
        *,
        publish: Callable[[], None],
        beat: Callable[[], None],
    ) -> None:
        self._consumer = consumer
        self._owned = ownership
        self._flusher = flusher
        self._batcher = batcher
        self._publish = publish
        self._beat = beat
        self.committed: dict[TopicPartition, int] = {}  # Kafka's committed offsets, as last known here
        self.newest_event_us: dict[str, int] = {}  # topic -> newest event time settled (freshness)
        self._uncommitted: dict[TopicPartition, int] = {}  # offsets whose Kafka commit failed, to retry
        self._retry_at = 0.0
        # False once a flush failed or a drain was given up: no drain or commit may follow.
        self.settling = True

    # -- submitting -------------------------------------------------------------------------------
    def submit(self, batch: TableBatch) -> None:
        # The epochs the batch's records were read under: its ledger update is fenced on them.
        batch.fence = {tp: self._owned.epochs[tp] for tp in batch.partitions if tp in self._owned.epochs}
        self._flusher.submit(batch)

    def submit_due(self, now_ms: float, *, force: Sequence[str] = ()) -> None:
        """Hand the flusher the batches due (and those forced), while it has room."""
        for table in [*force, *self._batcher.due(now_ms)]:
            if not self._flusher.has_room():
                return
            batch = self._batcher.take(table)
            if batch is not None:
                self.submit(batch)

    def drain(self, tables: Sequence[str], *, deadline_s: float) -> bool:
        """Flush these tables now and wait for them (and everything before them) to commit."""
        deadline = time.monotonic() + deadline_s
        remaining = list(tables)
        while remaining or self._flusher.pending:
            while remaining and self._flusher.has_room():
                batch = self._batcher.take(remaining.pop(0))
                if batch is not None:
                    self.submit(batch)
            self.handle_done(self._flusher.collect(timeout_s=0.05))
            self._beat()
            if time.monotonic() > deadline:
                log.error("drain deadline of %.0fs passed; uncommitted records will be re-delivered", deadline_s)
                return False
        return True

    def stop(self) -> None:
        """Nothing more settles: what is in flight is given up, and the way out commits nothing."""
        self.settling = False
        self._flusher.own({})

    # -- committing -------------------------------------------------------------------------------
    def handle_done(self, done: Sequence[Done]) -> None:
        """Commit what settled, in order; stop at a failure, committing nothing after it."""
        for item in done:
            if isinstance(item, FlushFailed):
                self.settling = False
                raise SinkFailed(f"flush of {item.table} failed: {item.error}") from item.error
            if isinstance(item, Abandoned):
                log.info("nothing of the abandoned flush of %s was committed", item.table)
                continue
            for topic, newest_us in item.newest_event_us.items():
                if newest_us > self.newest_event_us.get(topic, -1):
                    self.newest_event_us[topic] = newest_us
            self.commit_offsets(
                [KafkaTopicPartition(t, p, o) for (t, p), o in item.next_offsets.items() if self._owned.owns((t, p))]
            )

    def commit_offsets(self, offsets: list[KafkaTopicPartition]) -> None:
        if not offsets:
            return
        started = time.perf_counter()
        try:
            results = self._consumer.commit(offsets=offsets, asynchronous=False) or []
            failed = [tp for tp in results if tp.error is not None]
            if failed:
                raise KafkaException(failed[0].error)
        except KafkaException as exc:
            # The rows are in the database and the ledger holds these offsets, so nothing is lost; but Kafka
            # must catch up even if no further record arrives (a rebalance in progress, say): retry soon.
            metrics.COMMITS.labels("failed").inc()
            log.warning("offset commit failed (%s); retrying, the offsets ledger covers it meanwhile", exc)
            for tp in offsets:
                self._uncommitted[(tp.topic, tp.partition)] = tp.offset
            return
        metrics.COMMITS.labels("ok").inc()
        metrics.FLUSH_SECONDS.labels("commit").observe(time.perf_counter() - started)
        for tp in offsets:
            key = (tp.topic, tp.partition)
            self.committed[key] = tp.offset
            if self._uncommitted.get(key, -1) <= tp.offset:
                self._uncommitted.pop(key, None)
        self._publish()

    def retry(self, now: float) -> None:
        """Commit again what failed to commit, for partitions still ours, at most once a second."""
        if not self._uncommitted or now - self._retry_at < COMMIT_RETRY_S:
            return
        self._retry_at = now
        pending, self._uncommitted = self._uncommitted, {}
        self.commit_offsets(
            [KafkaTopicPartition(t, p, o) for (t, p), o in pending.items() if (t, p) in self._owned.assignment]
        )

    def forget(self, tps: set[TopicPartition]) -> None:
        """Partitions that moved away: nothing of them is committed or retried here any more."""
        for tp in tps:
            self._uncommitted.pop(tp, None)
            self.committed.pop(tp, None)
