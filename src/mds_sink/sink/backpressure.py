"""What is paused at the consumer, and why: backpressure, an operator, or a claim not yet made.

The set paused at the client is always computed whole, `backpressure | operator pauses | unclaimed`,
and applied as the difference from what is paused now. So the reasons never undo each other: the
buffer draining does not resume a partition an operator paused, and an operator's resume does not
resume a partition while the buffer is full. An operator's pause is kept across rebalances and
applied again when its partition is assigned here again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from mds_sink.core.batcher import Batcher, TopicPartition
from mds_sink.kafka.consumer import Consumer
from mds_sink.sink.ownership import Ownership, names

log = logging.getLogger(__name__)


class Room(Protocol):
    def has_room(self) -> bool:
        """The flusher takes another batch now."""


class Pauses:
    def __init__(
        self,
        consumer: Consumer,
        ownership: Ownership,
        batcher: Batcher,
        flusher: Room,
        *,
        max_buffered: int,
        publish: Callable[[], None],
    ) -> None:
        self._consumer = consumer
        self._owned = ownership
        self._batcher = batcher
        self._flusher = flusher
        self._max_buffered = max_buffered
        self._publish = publish
        self.client_paused: set[TopicPartition] = set()  # paused at the client now, for any reason
        self.operator: set[TopicPartition] = set()  # paused through the admin API until resumed
        self.backpressure = False  # every assigned partition is paused: the buffer is full

    def wanted(self) -> set[TopicPartition]:
        owned = self._owned
        wanted = owned.unclaimed | (self.operator & owned.assignment)
        if self.backpressure:
            wanted |= owned.assignment
        return wanted

    def apply(self) -> None:
        """Pause at the client exactly what should be; resume the rest."""
        wanted = self.wanted()
        pause, resume = wanted - self.client_paused, (self.client_paused - wanted) & self._owned.assignment
        if pause:
            self._consumer.pause([KafkaTopicPartition(t, p) for t, p in pause])
        if resume:
            self._consumer.resume([KafkaTopicPartition(t, p) for t, p in resume])
        if pause or resume:
            self.client_paused = wanted
            self._publish()

    # -- backpressure -------------------------------------------------------------------------------
    def blocked(self) -> bool:
        """A full batch waits for the flusher: reading on would only buffer more."""
        return not self._flusher.has_room() and any(self._batcher.is_full(t) for t in self._batcher.batches)

    def check(self) -> None:
        """Pause everything while the buffer is full or blocked; resume what nothing else holds after."""
        full = self._batcher.buffered >= self._max_buffered or self.blocked()
        if full != self.backpressure:
            self.backpressure = full
            self.apply()

    # -- operator pauses ----------------------------------------------------------------------------
    def pause_by_operator(self, topic: str, partition: int | None) -> None:
        chosen = self._owned.matching(topic, partition)
        self.operator |= chosen
        self.apply()
        log.info("paused by operator: %s", names(chosen))

    def resume_by_operator(self, topic: str, partition: int | None) -> None:
        # An operator's pause held for a partition not assigned here now is released too.
        chosen = {(t, p) for t, p in self.operator if t == topic and partition in (None, p)}
        self.operator -= chosen
        self.apply()
        log.info("resumed by operator: %s", names(chosen))

    def held(self, tps: set[TopicPartition]) -> set[TopicPartition]:
        """Those of these partitions an operator paused (applied again when assigned here)."""
        return self.operator & tps

    # -- rebalances ---------------------------------------------------------------------------------
    def release(self, tps: set[TopicPartition]) -> None:
        """Partitions that moved away: their client pause is lifted, an operator's pause is kept."""
        paused = self.client_paused & tps
        if paused:
            # The client keeps a partition's pause across an unassign: were it assigned here again, it
            # would stay paused with nothing saying so.
            with contextlib.suppress(KafkaException):
                self._consumer.resume([KafkaTopicPartition(t, p) for t, p in paused])
            self.client_paused -= paused
