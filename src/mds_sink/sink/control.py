"""What the side port may see of the sink and do to it: the `SinkControl` protocol and the status.

The HTTP layer depends on this module only, never on the worker. `SinkState` is what the worker is
doing right now, shared with the side port and the tests. Other threads never see the consumer
thread's own collections: it publishes an immutable `StatusSnapshot` (frozen sets, read-only mappings
of copies) and replaces it whole, so a reader on another thread can iterate it while the consumer
moves on. The scalars (heartbeat, database_ok, ...) are replaced whole too, by whichever thread
knows them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from mds_sink.config.settings import Settings

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


class SinkControl(Protocol):
    """The sink as the side port sees it. The actions are queued to the consumer thread, which applies
    them at its next turn; their effect shows in `state.snapshot`."""

    @property
    def settings(self) -> Settings: ...

    @property
    def state(self) -> SinkState: ...

    @property
    def topics(self) -> frozenset[str]:
        """The topics consumed."""

    @property
    def tables(self) -> frozenset[str]:
        """The tables written."""

    def ready(self) -> str | None:
        """None when ready; otherwise the reason it is not."""

    def pause(self, topic: str, partition: int | None = None) -> None:
        """Pause a topic (or one partition of it) until resumed, across rebalances."""

    def resume(self, topic: str, partition: int | None = None) -> None: ...

    def flush_now(self) -> None:
        """Flush every buffered batch at the next turn, due or not."""

    def reload_tenants(self) -> tuple[int, int]:
        """Reload the tenant set now: (known, active). Raises if the database does not answer."""
