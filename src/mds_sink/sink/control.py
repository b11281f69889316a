"""What the worker is doing right now, shared with the HTTP side port and the tests.

Other threads never see the consumer thread's own collections: it publishes an immutable
`StatusSnapshot` (frozen sets, read-only mappings of copies) and replaces it whole, so a reader on
another thread can iterate it while the consumer moves on. The scalars (heartbeat, database_ok, ...)
are replaced whole too, by whichever thread knows them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

TopicPartition = tuple[str, int]

_EMPTY: Mapping[TopicPartition, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class LastFlush:
    table: str
    at: float  # wall clock, seconds
    rows: int
    dead_letters: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    assignment: frozenset[TopicPartition] = frozenset()
    paused: frozenset[TopicPartition] = frozenset()  # paused at the client now, for any reason
    # Paused by an operator until resumed; kept across rebalances and applied again when such a
    # partition is assigned to this member again (those not assigned now are listed too).
    operator_paused: frozenset[TopicPartition] = frozenset()
    unclaimed: frozenset[TopicPartition] = frozenset()  # assigned, waiting to claim its ledger epoch
    committed: Mapping[TopicPartition, int] = field(default_factory=lambda: _EMPTY)
    end_offsets: Mapping[TopicPartition, int] = field(default_factory=lambda: _EMPTY)  # high watermarks, last seen
    buffered: int = 0

    @staticmethod
    def of(
        *,
        assignment: set[TopicPartition],
        paused: set[TopicPartition],
        operator_paused: set[TopicPartition],
        unclaimed: set[TopicPartition],
        committed: dict[TopicPartition, int],
        end_offsets: dict[TopicPartition, int],
        buffered: int,
    ) -> StatusSnapshot:
        """Copies of the consumer thread's collections, frozen."""
        return StatusSnapshot(
            frozenset(assignment),
            frozenset(paused),
            frozenset(operator_paused),
            frozenset(unclaimed),
            MappingProxyType(dict(committed)),
            MappingProxyType(dict(end_offsets)),
            buffered,
        )


@dataclass
class SinkState:
    heartbeat: float = field(default_factory=time.monotonic)  # monotonic time of the last loop turn
    joined: bool = False
    database_ok: bool = False
    breaker_open: bool = False
    snapshot: StatusSnapshot = field(default_factory=StatusSnapshot)
    last_flush: LastFlush | None = None
    last_error: str | None = None
    schema_revision: str | None = None
    revocations: int = 0  # partitions revoked or lost since start (a stall must not cause any)

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    # Read-only views of the current snapshot, for readers that want one field of it.
    @property
    def assignment(self) -> frozenset[TopicPartition]:
        return self.snapshot.assignment

    @property
    def paused(self) -> frozenset[TopicPartition]:
        return self.snapshot.paused

    @property
    def committed(self) -> Mapping[TopicPartition, int]:
        return self.snapshot.committed
