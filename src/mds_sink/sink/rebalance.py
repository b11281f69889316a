"""Ownership across rebalances: claim, resume, drain, give up.

Each partition assigned is claimed in the offsets ledger (a new epoch) before any of its records is
consumed; every flush writes under that epoch, so a member that lost a partition cannot write it.
Where the ledger is ahead of Kafka (a crash between the database commit and the Kafka commit), the
partition resumes where its rows end and Kafka is told at once. A partition the database could not
claim stays paused and is claimed at a later turn. A partition revoked is drained (or, past the
deadline, given up); a partition lost commits nothing; either way nothing of it stays buffered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from mds_sink import metrics
from mds_sink.core.batcher import Batcher, TopicPartition
from mds_sink.core.fencing import resume_offset
from mds_sink.db.writer import Claim
from mds_sink.kafka.consumer import Consumer
from mds_sink.sink.backpressure import Pauses
from mds_sink.sink.commits import Commits, Flush
from mds_sink.sink.control import SinkState
from mds_sink.sink.ownership import Ownership, names

log = logging.getLogger(__name__)

# The broker's answer in a rebalance callback: past this, the ledger alone says where to resume.
COMMITTED_TIMEOUT_S = 10.0
# Partitions the database could not claim are tried again at most this often.
CLAIM_RETRY_S = 1.0


class Ledger(Protocol):
    def claim(
        self, partitions: Iterable[TopicPartition], *, pool_wait_s: float | None = None
    ) -> dict[TopicPartition, Claim]:
        """A new epoch for each partition, and where its rows end (db.writer.Writer.claim)."""


class Rebalance:
    def __init__(
        self,
        consumer: Consumer,
        ledger: Ledger,
        ownership: Ownership,
        *,
        commits: Commits,
        pauses: Pauses,
        batcher: Batcher,
        flusher: Flush,
        state: SinkState,
        cooperative: bool,
        claim_wait_s: float,
        drain_deadline_s: float,
        publish: Callable[[], None],
        forget: Callable[[set[TopicPartition]], None] = lambda _tps: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._consumer = consumer
        self._ledger = ledger
        self._owned = ownership
        self._commits = commits
        self._pauses = pauses
        self._batcher = batcher
        self._flusher = flusher
        self._state = state
        self._cooperative = cooperative
        self._claim_wait_s = claim_wait_s
        self._drain_deadline_s = drain_deadline_s
        self._publish = publish
        self._forget = forget  # what the status reports of partitions gone (end offsets, lag series)
        self._sleep = sleep
        self._claim_retry_at = 0.0

    # -- claims -----------------------------------------------------------------------------------
    def _claim(self, tps: Iterable[TopicPartition], *, attempts: int) -> dict[TopicPartition, Claim]:
        """A new ledger epoch for each partition; {} if the database did not answer (claimed later)."""
        for attempt in range(attempts):
            try:
                return self._ledger.claim(tps, pool_wait_s=self._claim_wait_s)
            except Exception as exc:
                log.warning("cannot claim %s in the offsets ledger (attempt %d): %s", names(tps), attempt + 1, exc)
                if attempt + 1 < attempts:
                    self._sleep(min(2.0**attempt, 5.0))
        return {}

    def _committed_offsets(self, partitions: list[KafkaTopicPartition]) -> dict[TopicPartition, int]:
        """Kafka's committed offsets (absent: none); {} with a warning if the broker does not answer."""
        try:
            found = self._consumer.committed(partitions, timeout=COMMITTED_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("committed offsets unavailable (%s): resuming from the offsets ledger", exc)
            return {}
        return {(p.topic, p.partition): p.offset for p in found if p.offset >= 0}

    def _owned_from(self, tp: TopicPartition, claim: Claim, committed: int | None) -> int | None:
        """Record a claim; returns the offset to resume from if the ledger is ahead of Kafka."""
        self._owned.claimed(tp, claim.epoch)
        return resume_offset(claim.next_offset, committed)

    def claim_pending(self, now: float) -> None:
        """Claim what the rebalance callback could not (the database was away), at most once a second."""
        if not self._owned.unclaimed or now - self._claim_retry_at < CLAIM_RETRY_S:
            return
        self._claim_retry_at = now
        claims = self._claim(self._owned.unclaimed, attempts=1)
        healed = []
        for tp, claim in claims.items():
            offset = self._owned_from(tp, claim, self._commits.committed.get(tp))
            if offset is not None:
                healed.append(KafkaTopicPartition(tp[0], tp[1], offset))
        for at in healed:
            try:  # paused since assigned, so nothing of it was consumed: resume where the rows end
                self._consumer.seek(at)
            except KafkaException as exc:  # re-delivery from Kafka's offset is idempotent
                log.info("could not seek %s[%d] to %d: %s", at.topic, at.partition, at.offset, exc)
        if claims:
            log.info("claimed %s", names(claims))
            self._flusher.own(self._owned.epochs)
            self._commits.commit_offsets(healed)
            self._pauses.apply()

    # -- the consumer's rebalance callbacks -------------------------------------------------------
    def on_assign(self, consumer: Any, partitions: list[KafkaTopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        metrics.REBALANCES.labels("assign").inc()
        self._owned.lost.difference_update(tps)
        claims = self._claim(tps, attempts=2)
        committed = self._committed_offsets(partitions)
        healed: list[KafkaTopicPartition] = []
        for p in partitions:
            tp = (p.topic, p.partition)
            if tp in committed:
                self._commits.committed[tp] = committed[tp]
            claim = claims.get(tp)
            if claim is None:
                self._owned.unclaimed.add(tp)  # paused below until claimed: nothing is read that could not be written
                continue
            offset = self._owned_from(tp, claim, committed.get(tp))
            # A crash between the database commit and the Kafka commit: the ledger is ahead.
            if offset is not None:
                p.offset = offset
                healed.append(KafkaTopicPartition(p.topic, p.partition, offset))
                log.info(
                    "resuming from the offsets ledger at %d (Kafka had %s)",
                    offset,
                    committed.get(tp, "none"),
                    extra={"topic": p.topic, "partition": p.partition},
                )
        if self._cooperative:
            self._consumer.incremental_assign(partitions)
        else:  # an eager rebalance revoked everything first: this is the whole new assignment
            self._consumer.assign(partitions)
        self._owned.assignment.update(tps)
        self._flusher.own(self._owned.epochs)
        self._state.joined = True
        if healed:
            # Those rows are in the database: Kafka catches up now, not at the next flush (there may be none).
            self._commits.commit_offsets(healed)
        self._pauses.apply()
        held = self._pauses.held(set(tps))
        if held:
            log.warning("paused by operator before, paused again: %s", names(held))
        log.info("assigned %s", names(tps))
        self._publish()

    def on_revoke(self, consumer: Any, partitions: list[KafkaTopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        metrics.REBALANCES.labels("revoke").inc()
        self._state.revocations += 1
        log.info("revoked %s", names(tps))
        try:
            if (
                self._commits.settling
                and tps & self._owned.assignment
                and not self._commits.drain(self._batcher.tables_with(tps), deadline_s=self._drain_deadline_s)
            ):
                log.error("revoked partitions not drained in time: their records will be re-delivered")
        finally:
            self.give_up(tps)

    def on_lost(self, consumer: Any, partitions: list[KafkaTopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        metrics.REBALANCES.labels("lost").inc()
        self._state.revocations += 1
        self._owned.lost.update(tps)
        dropped = self.give_up(tps)
        log.warning("partitions lost: %s; dropped %d buffered records, nothing committed", names(tps), dropped)

    def give_up(self, tps: set[TopicPartition]) -> int:
        """Partitions that moved away: nothing of them stays buffered, queued, paused or reported."""
        dropped = self._batcher.drop(tps)
        self._pauses.release(tps)
        self._owned.forget(tps)
        self._commits.forget(tps)
        self._forget(tps)
        # Batches queued for the flusher lose these partitions' records; the one being written stops
        # retrying if nothing of it is ours any more, and the ledger's epoch fences it if it commits late.
        self._flusher.own(self._owned.epochs)
        self._publish()
        return dropped
