"""Which partitions this member owns now, and under which ledger epoch.

The consumer thread's own record: the rebalance unit changes it, the commit and pause units read it
(a commit or a pause is only for a partition owned here). Other threads see it through the status
snapshot, never directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mds_sink.core.batcher import TopicPartition


def names(tps: Iterable[TopicPartition]) -> str:
    """Partitions as operators read them in the log: topic[partition], sorted."""
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps))


@dataclass
class Ownership:
    assignment: set[TopicPartition] = field(default_factory=set)
    epochs: dict[TopicPartition, int] = field(default_factory=dict)  # partition -> epoch claimed in the ledger
    unclaimed: set[TopicPartition] = field(default_factory=set)  # assigned, kept paused until its claim succeeds
    lost: set[TopicPartition] = field(default_factory=set)  # taken from this member without a revoke

    def owns(self, tp: TopicPartition) -> bool:
        """Assigned here and not lost: its offsets may be committed by this member."""
        return tp in self.assignment and tp not in self.lost

    def matching(self, topic: str, partition: int | None) -> set[TopicPartition]:
        """The assigned partitions of a topic (or the one partition named)."""
        return {(t, p) for t, p in self.assignment if t == topic and partition in (None, p)}

    def claimed(self, tp: TopicPartition, epoch: int) -> None:
        self.epochs[tp] = epoch
        self.unclaimed.discard(tp)

    def forget(self, tps: set[TopicPartition]) -> None:
        """Partitions that moved away (lost ones stay marked until assigned here again)."""
        self.assignment -= tps
        self.unclaimed -= tps
        for tp in tps:
            self.epochs.pop(tp, None)
