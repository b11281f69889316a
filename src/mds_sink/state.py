"""What the worker is doing right now, shared with the HTTP side port (read-mostly, lock-free)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class LastFlush:
    table: str
    at: float  # wall clock, seconds
    rows: int
    dead_letters: int
    duration_s: float


@dataclass
class SinkState:
    heartbeat: float = field(default_factory=time.monotonic)  # monotonic time of the last loop turn
    joined: bool = False
    database_ok: bool = False
    breaker_open: bool = False
    assignment: set[tuple[str, int]] = field(default_factory=set)
    paused: set[tuple[str, int]] = field(default_factory=set)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    end_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # high watermarks, as last seen
    last_flush: LastFlush | None = None
    last_error: str | None = None
    schema_revision: str | None = None
    revocations: int = 0  # partitions revoked or lost since start (a stall must not cause any)

    def beat(self) -> None:
        self.heartbeat = time.monotonic()
