"""What other threads see of the consumer thread: the status snapshot and the Prometheus gauges.

The snapshot is rebuilt from the units' own collections (copies, frozen) and replaced whole; the HTTP
side port and the tests read only that. The gauges are set once a second by the consumer loop, so
they freeze with it (the heartbeat age is the one read at scrape time).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]  # exported, not in stubs

from mds_sink import metrics
from mds_sink.core.batcher import Batcher, TopicPartition
from mds_sink.kafka.consumer import Consumer
from mds_sink.sink.backpressure import Pauses
from mds_sink.sink.commits import Commits
from mds_sink.sink.control import SinkState, StatusSnapshot
from mds_sink.sink.ownership import Ownership

log = logging.getLogger(__name__)

# A paused partition is not fetched, so its cached high watermark stands still: ask the broker this often.
PAUSED_END_OFFSETS_S = 5.0
# How often the status snapshot is published while nothing else changed (the buffered count moves).
PUBLISH_EVERY_S = 0.1


class Gauges:
    def __init__(
        self,
        state: SinkState,
        ownership: Ownership,
        pauses: Pauses,
        commits: Commits,
        batcher: Batcher,
        *,
        consumer: Consumer,
        admin: AdminClient,
        pool_stats: Callable[[], Mapping[str, int]],
        ready: Callable[[], str | None],
    ) -> None:
        self._state = state
        self._owned = ownership
        self._pauses = pauses
        self._commits = commits
        self._batcher = batcher
        self._consumer = consumer
        self._admin = admin
        self._pool_stats = pool_stats
        self._ready = ready
        self._end_offsets: dict[TopicPartition, int] = {}
        self._end_offset_requests: dict[KafkaTopicPartition, Future[Any]] = {}
        self._gauges_at = 0.0
        self._ends_at = 0.0
        self._published_at = 0.0

    def publish(self) -> None:
        """Replace the status snapshot other threads read (they never see the collections it copies)."""
        self._published_at = time.monotonic()
        self._state.snapshot = StatusSnapshot.of(
            assignment=self._owned.assignment,
            paused=self._pauses.client_paused,
            operator_paused=self._pauses.operator,
            unclaimed=self._owned.unclaimed,
            committed=self._commits.committed,
            end_offsets=self._end_offsets,
            buffered=self._batcher.buffered,
        )

    def forget(self, tps: set[TopicPartition]) -> None:
        """Partitions that moved away: no end offset, no lag series."""
        for tp in tps:
            self._end_offsets.pop(tp, None)
            with contextlib.suppress(KeyError):  # no series yet for a partition that never reported
                metrics.LAG.remove(tp[0], str(tp[1]))

    def update(self, now: float) -> None:
        if now - self._gauges_at < 1.0:
            if now - self._published_at >= PUBLISH_EVERY_S:
                self.publish()
            return
        self._gauges_at = now
        self._refresh_end_offsets(now)
        assignment = self._owned.assignment
        metrics.ASSIGNED_PARTITIONS.set(len(assignment))
        metrics.PAUSED_PARTITIONS.set(len(self._pauses.client_paused))
        metrics.BUFFERED.set(self._batcher.buffered)
        committed = self._commits.committed
        for tp in assignment:
            high = self._end_offsets.get(tp)
            if high is not None:
                metrics.LAG.labels(tp[0], str(tp[1])).set(max(0, high - committed.get(tp, 0)))
        wall_us = time.time() * 1e6
        for topic, newest_us in self._commits.newest_event_us.items():
            metrics.FRESHNESS.labels(topic).set(max(0.0, (wall_us - newest_us) / 1e6))
        stats = self._pool_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        metrics.POOL.labels("in_use").set(size - idle)
        metrics.POOL.labels("idle").set(idle)
        metrics.POOL.labels("waiting").set(stats.get("requests_waiting", 0))
        metrics.UP.set(1 if self._ready() is None else 0)
        self.publish()

    def _refresh_end_offsets(self, now: float) -> None:
        """High watermarks: the client's cached ones, and the broker's for paused partitions (not fetched,
        so their cache stands still), asked without blocking and read at a later turn."""
        paused = self._pauses.client_paused
        for asked, future in list(self._end_offset_requests.items()):
            if not future.done():
                continue
            del self._end_offset_requests[asked]
            with contextlib.suppress(Exception):  # the broker did not answer: ask again later
                if (asked.topic, asked.partition) in paused:
                    self._end_offsets[(asked.topic, asked.partition)] = future.result().offset
        for tp in self._owned.assignment - paused:
            try:
                _low, high = self._consumer.get_watermark_offsets(KafkaTopicPartition(*tp), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                self._end_offsets[tp] = high
        # A partition just assigned paused has no end offset yet: ask at the next turn, not in 5 s.
        unknown = any(tp not in self._end_offsets for tp in paused)
        due = now - self._ends_at >= (1.0 if unknown else PAUSED_END_OFFSETS_S)
        if paused and not self._end_offset_requests and due:
            self._ends_at = now
            latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # untyped in the stubs
            wanted = {KafkaTopicPartition(t, p): latest for t, p in paused}
            try:
                self._end_offset_requests = self._admin.list_offsets(wanted, request_timeout=PAUSED_END_OFFSETS_S)
            except KafkaException as exc:
                log.debug("end offsets of paused partitions unavailable: %s", exc)
