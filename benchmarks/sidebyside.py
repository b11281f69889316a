"""Side by side: two sinks drain the same topics at the same time, B with settings of its own.

Each sink has its own group and its own database, so neither sees the other's rows or offsets, but
both share the machine at every moment. On a shared host the machine's speed moves from one run to
the next by more than the cost of most settings (back-to-back runs of the same code here differ by
up to 30%); two sinks running at once meet the same speed, so the ratio of their rates shows what B's
settings cost.

A round lasts until the first sink has committed everything; each sink's rate is counted from the
moment both are ready to then (the other one is still running, so both shared the whole window).
Rounds alternate which sink starts first.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks import benchdb
from benchmarks.sinkproc import CommitWatch, Sink
from benchmarks.stats import rate
from mds_sink.config.settings import Settings


@dataclass(frozen=True)
class Side:
    records: int  # committed in the shared window
    cpu_s: float  # the sink's CPU in the window

    def rate(self, seconds: float) -> float:
        return rate(self.records, seconds)

    @property
    def cpu_s_per_million(self) -> float:
        return self.cpu_s / max(1, self.records) * 1e6


@dataclass(frozen=True)
class Round:
    a: Side
    b: Side
    seconds: float  # both ready -> the first done
    b_first: bool  # B was started first

    @property
    def ratio(self) -> float:
        """B's rate over A's."""
        return self.b.records / max(1, self.a.records)


def _committed(watch: CommitWatch) -> int:
    """Records committed: bench topics start at offset 0; a partition with no commit yet counts none."""
    return sum(max(0, offset) for offset in watch.committed().values())


def compare(
    sides: Mapping[str, tuple[Settings, Mapping[str, str]]],
    ends: Mapping[tuple[str, int], int],
    *,
    b_first: bool,
    log_dir: Path,
    timeout_s: float,
) -> Round:
    """One round: `sides` holds A and B, each its settings (its database) and its sinks' environment."""
    total = sum(ends.values())
    order = ["B", "A"] if b_first else ["A", "B"]
    watches: dict[str, CommitWatch] = {}
    procs: dict[str, Sink] = {}
    try:
        for name in order:
            settings, env = sides[name]
            benchdb.empty(settings)
            group = f"bench-side-{name.lower()}-{uuid.uuid4().hex[:8]}"
            watches[name] = CommitWatch(settings.kafka.bootstrap_servers, group, ends)
            full = {**env, "MDS_SINK_KAFKA__GROUP_ID": group}
            procs[name] = Sink(full, log_dir / f"sink-{group}.log", group)
        deadline = time.monotonic() + 60
        while not all(p.check_ready() for p in procs.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("the two sinks were not both ready within 60s")
            time.sleep(0.02)
        began = time.monotonic()
        start = {n: (_committed(watches[n]), procs[n].sample().cpu_s) for n in order}
        deadline = began + timeout_s
        while True:
            now = {n: _committed(watches[n]) for n in order}
            if any(count >= total for count in now.values()):
                break
            for p in procs.values():
                if p.proc.poll() is not None:
                    raise RuntimeError(f"sink {p.name} exited with {p.proc.returncode} while draining")
            if time.monotonic() > deadline:
                raise TimeoutError(f"neither sink drained within {timeout_s:.0f}s")
            time.sleep(0.05)
        seconds = time.monotonic() - began
        cpu = {n: procs[n].sample().cpu_s for n in order}
    finally:
        for p in procs.values():
            p.stop()
        for w in watches.values():
            w.close()
    side = {n: Side(now[n] - start[n][0], cpu[n] - start[n][1]) for n in order}
    return Round(side["A"], side["B"], seconds, b_first)
