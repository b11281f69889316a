"""End to end: real sink processes drain the filled topics into empty tables, with a fresh group.

Timed from the moment the first sink is ready (joined, database reachable) until every offset is
committed; the rows are then checked visible to the reader, tenant by tenant. Start-up (interpreter,
imports, group join) is reported apart, and included in a second rate.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import benchdb
from benchmarks.sinkproc import CommitWatch, Sink, machine_busy
from benchmarks.stats import rate
from mds_sink.config.settings import Settings


@dataclass
class SinkFigures:
    ready_s: float
    cpu_s: float  # while draining (from ready to done)
    peak_rss_mb: float
    exit_code: int


@dataclass
class Drained:
    sinks: int
    records: int
    seconds: float  # first ready -> everything committed
    seconds_with_startup: float  # first process start -> everything committed
    machine_busy: float  # share of all cores busy while draining (broker, database, sink)
    visible: dict[str, int] = field(default_factory=dict)
    per_sink: list[SinkFigures] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return rate(self.records, self.seconds)

    @property
    def rate_with_startup(self) -> float:
        return rate(self.records, self.seconds_with_startup)

    @property
    def cpu_s_per_million(self) -> float:
        return sum(s.cpu_s for s in self.per_sink) / self.records * 1e6

    @property
    def machine_cpu_s_per_million(self) -> float:
        """Every process's CPU time per million records: the cost model to size a machine with."""
        return self.machine_busy * (os.cpu_count() or 1) * self.seconds / self.records * 1e6


def drain(
    settings: Settings,
    sink_env: Mapping[str, str],
    ends: Mapping[tuple[str, int], int],
    tenant_ids: list[str],
    *,
    sinks: int,
    log_dir: Path,
    timeout_s: float,
) -> Drained:
    benchdb.empty(settings)
    group = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    env = {**sink_env, "MDS_SINK_KAFKA__GROUP_ID": group}
    records = sum(ends.values())
    watch = CommitWatch(settings.kafka.bootstrap_servers, group, ends)
    procs: list[Sink] = []
    try:
        for n in range(sinks):
            procs.append(Sink(env, log_dir / f"sink-{group}-{n}.log", f"{group}-{n}"))
        first_start = procs[0].started
        # From the first sink ready on, everything is drain time; a second sink may join later.
        began = _first_ready(procs, timeout_s=60)
        cpu_at_start = [p.sample().cpu_s for p in procs]
        busy0 = machine_busy()
        deadline = time.monotonic() + timeout_s
        while True:
            committed = watch.committed()
            if all(committed.get(tp, -1) >= end for tp, end in ends.items()):
                break
            for p in procs:
                if p.proc.poll() is not None:
                    raise RuntimeError(f"sink {p.name} exited with {p.proc.returncode} while draining")
                p.check_ready()  # notes when a later sink joins
            if time.monotonic() > deadline:
                raise TimeoutError(f"not drained within {timeout_s:.0f}s: {sum(committed.values())} of {records}")
            time.sleep(0.05)
        done = time.monotonic()
        busy1 = machine_busy()
        final = [p.sample() for p in procs]
        for p in procs:
            p.save_metrics(log_dir / f"sink-{p.name}.metrics")
        visible = benchdb.visible_rows(settings, tenant_ids)
    finally:
        codes = [p.stop() for p in procs]
        watch.close()
    per_sink = [
        SinkFigures(p.ready_at - p.started if p.ready_at else math.nan, f.cpu_s - c, f.hwm_kb / 1024, code)
        for p, f, c, code in zip(procs, final, cpu_at_start, codes, strict=True)
    ]
    busy = (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1])
    return Drained(sinks, records, done - began, done - first_start, busy, visible, per_sink)


def _first_ready(procs: list[Sink], *, timeout_s: float) -> float:
    """Monotonic time the first of the sinks answered ready (the others are noted as they follow)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            if p.check_ready():
                return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(f"no sink ready within {timeout_s:.0f}s")
