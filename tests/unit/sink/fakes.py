"""In-memory stand-ins for the broker, the offsets ledger and the flusher, to test the worker's units.

`FakeConsumer` is a consumer group of one in memory (after arroyo's LocalBroker): partitions hold
records, the test plays the group coordinator (`group_assigns`, `group_revokes`, `group_loses`, which
run the rebalance callbacks as librdkafka does), and every effect the units have on the client is kept
to be asserted exactly: positions, client pauses, seeks, commits. No thread, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from mds_sink.config.settings import load_settings
from mds_sink.core.batcher import Batcher, TableBatch
from mds_sink.core.batcher import Source as RecordSource
from mds_sink.core.tables import BARS
from mds_sink.db.writer import Claim
from mds_sink.kafka.consumer import RebalanceCallback
from mds_sink.sink.backpressure import Pauses
from mds_sink.sink.commits import Commits
from mds_sink.sink.control import SinkState
from mds_sink.sink.flusher import Done, FlushFailed
from mds_sink.sink.ownership import Ownership
from mds_sink.sink.pipeline import Settled
from mds_sink.sink.rebalance import Rebalance
from mds_sink.sink.units import wire

TP = tuple[str, int]
OFFSET_INVALID = -1001  # the client's "no position given": it starts from the group's committed offset


def timed_out(what: str) -> KafkaException:
    return KafkaException(KafkaError(KafkaError._TIMED_OUT, what))


class FakeConsumer:
    def __init__(self, records: Mapping[TP, Sequence[bytes]] | None = None) -> None:
        self.log: dict[TP, list[bytes]] = {tp: list(values) for tp, values in (records or {}).items()}
        self.positions: dict[TP, int] = {}  # the assignment, and where each partition reads next
        self.paused: set[TP] = set()  # kept across an unassign, as librdkafka does
        self.group_offsets: dict[TP, int] = {}  # what the group coordinator holds
        self.assigned: list[dict[TP, int]] = []  # each assign call: partition -> offset given
        self.seeks: list[tuple[TP, int]] = []
        self.commits: list[dict[TP, int]] = []  # each commit the coordinator accepted
        self.failing_commits = 0  # the next n commits fail (a rebalance in progress, say)
        self.coordinator_away = False  # committed() does not answer
        self.closed = False
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._on_lost: RebalanceCallback | None = None

    # -- the consumer protocol --------------------------------------------------------------------
    def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        out: list[Message] = []
        for tp, at in sorted(self.positions.items()):
            if tp in self.paused:
                continue
            values = self.log.get(tp, [])[at : at + num_messages - len(out)]
            out += [Message(topic=tp[0], partition=tp[1], offset=at + i, value=v) for i, v in enumerate(values)]
            self.positions[tp] = at + len(values)
        return out

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = {}
        self.incremental_assign(partitions)

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        given = {(p.topic, p.partition): p.offset for p in partitions}
        self.assigned.append(given)
        for tp, offset in given.items():
            self.positions[tp] = offset if offset >= 0 else self.group_offsets.get(tp, 0)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(p.topic, p.partition) for p in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(p.topic, p.partition) for p in partitions}

    def seek(self, partition: TopicPartition) -> None:
        tp = (partition.topic, partition.partition)
        assert tp in self.positions, f"seek of {tp}, not assigned"
        self.seeks.append((tp, partition.offset))
        self.positions[tp] = partition.offset

    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[False]) -> list[TopicPartition]:
        if self.failing_commits:
            self.failing_commits -= 1
            raise timed_out("commit: coordinator busy")
        accepted = {(p.topic, p.partition): p.offset for p in offsets}
        self.commits.append(accepted)
        self.group_offsets.update(accepted)
        return [TopicPartition(t, p, o) for (t, p), o in accepted.items()]

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        if self.coordinator_away:
            raise timed_out("committed: no answer")
        return [
            TopicPartition(p.topic, p.partition, self.group_offsets.get((p.topic, p.partition), OFFSET_INVALID))
            for p in partitions
        ]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        return 0, len(self.log.get((partition.topic, partition.partition), []))

    def close(self) -> None:
        if self.positions and self._on_revoke is not None:  # leaving the group revokes what is held
            self.group_revokes(list(self.positions))
        self.closed = True

    # -- the group coordinator, played by the test ---------------------------------------------------
    def group_assigns(self, tps: Iterable[TP]) -> None:
        assert self._on_assign is not None
        self._on_assign(self, [TopicPartition(t, p) for t, p in tps])

    def group_revokes(self, tps: Iterable[TP]) -> None:
        wanted = list(tps)
        assert self._on_revoke is not None
        self._on_revoke(self, [TopicPartition(t, p) for t, p in wanted])
        for tp in wanted:
            self.positions.pop(tp, None)

    def group_loses(self, tps: Iterable[TP]) -> None:
        wanted = list(tps)
        assert self._on_lost is not None
        self._on_lost(self, [TopicPartition(t, p) for t, p in wanted])
        for tp in wanted:
            self.positions.pop(tp, None)


class FakeLedger:
    """The offsets ledger: where each partition's rows end, and a new epoch per claim."""

    def __init__(self, next_offsets: Mapping[TP, int] | None = None) -> None:
        self.next_offsets: dict[TP, int] = dict(next_offsets or {})
        self.epochs: dict[TP, int] = {}
        self.down = False  # the database does not answer
        self.calls = 0

    def claim(self, partitions: Iterable[TP], *, pool_wait_s: float | None = None) -> dict[TP, Claim]:
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")
        claims = {}
        for tp in sorted(set(partitions)):
            self.epochs[tp] = self.epochs.get(tp, 0) + 1
            claims[tp] = Claim(self.next_offsets.get(tp, 0), self.epochs[tp])
        return claims


class FakeFlusher:
    """Settles in submission order when collected; a batch marked to fail fails, and nothing after it settles."""

    def __init__(self) -> None:
        self.queued: list[TableBatch] = []
        self.submitted: list[TableBatch] = []
        self.owned: dict[TP, int] = {}
        self.room = True
        self.fail_at: set[int] = set()  # submission numbers (from 0) that fail for good
        self._failed = False

    @property
    def pending(self) -> int:
        return len(self.queued)

    def has_room(self) -> bool:
        return self.room

    def submit(self, batch: TableBatch) -> None:
        self.queued.append(batch)
        self.submitted.append(batch)

    def own(self, owned: Mapping[TP, int]) -> None:
        self.owned = dict(owned)

    def collect(self, timeout_s: float = 0.0) -> list[Done]:
        done: list[Done] = []
        for batch in self.queued:
            number = self.submitted.index(batch)
            if self._failed:
                continue  # ordered settlement: nothing behind a failure settles
            if number in self.fail_at:
                self._failed = True
                done.append(FlushFailed(batch.spec.name, ConnectionError("server closed the connection")))
                continue
            done.append(Settled(batch.spec.name, len(batch.rows), [], dict(batch.next_offsets)))
        self.queued = []
        return done


def buffer(batcher: Batcher, tp: TP, offsets: Iterable[int], *, now_ms: float = 0.0) -> None:
    """Records of a bars partition, as the ingest step would buffer them (one row per offset)."""
    topic, partition = tp
    for offset in offsets:
        row = (offset, "tenant", "vendor", f"S{partition}-{offset}", "1m", 1.0, 1.0, 1.0, 1.0, 1.0, None, None, 0)
        batcher.batch(BARS, now_ms).add(row, RecordSource(topic, partition, offset), 10)


@dataclass
class Harness:
    """The worker's units wired as the worker wires them (sink.units.wire), over the fakes."""

    consumer: FakeConsumer
    ledger: FakeLedger
    flusher: FakeFlusher
    batcher: Batcher
    state: SinkState
    ownership: Ownership
    pauses: Pauses
    commits: Commits
    rebalance: Rebalance
    sleeps: list[float] = field(default_factory=list)  # the waits between claim attempts


def units(
    *,
    consumer: FakeConsumer | None = None,
    ledger: FakeLedger | None = None,
    cooperative: bool = True,
    max_buffered: int = 1000,
    max_rows: int = 1000,
) -> Harness:
    consumer = consumer or FakeConsumer()
    ledger = ledger or FakeLedger()
    flusher = FakeFlusher()
    batcher = Batcher(max_rows, 60_000, 1 << 30)
    state = SinkState()
    settings = load_settings(
        kafka={"assignment_strategy": "cooperative-sticky" if cooperative else "roundrobin"},
        batching={"max_buffered_records": max_buffered},
        shutdown_deadline_s=30.0,
    )
    sleeps: list[float] = []
    wired = wire(settings, consumer, ledger, flusher, batcher, state, publish=lambda: None, sleep=sleeps.append)
    wired.subscribe(consumer, ["bars"])
    return Harness(
        consumer,
        ledger,
        flusher,
        batcher,
        state,
        wired.ownership,
        wired.pauses,
        wired.commits,
        wired.rebalance,
        sleeps=sleeps,
    )
