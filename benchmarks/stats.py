"""Pure arithmetic of the benchmark: /proc parsing, percentiles, produce-to-commit latencies."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProcSample:
    cpu_s: float  # user + system, all threads
    rss_kb: int
    hwm_kb: int  # peak resident set size so far


def parse_stat_cpu(stat: str, clock_ticks: int) -> float:
    """utime + stime of /proc/<pid>/stat in seconds (the command name may hold spaces and parentheses)."""
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / clock_ticks


def parse_status_kb(status: str, name: str) -> int:
    """A `Name:   1234 kB` line of /proc/<pid>/status; 0 when absent."""
    for line in status.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def parse_machine_busy(stat: str) -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from the first line of /proc/stat."""
    values = [int(v) for v in stat.splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return float(total - idle), float(total)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in [0, 100])."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True, slots=True)
class Commit:
    """What a poll of the group's committed offsets saw: at `at_ms`, partition `partition` was at `offset`."""

    at_ms: float
    partition: int
    offset: int


def commit_latencies(produced: Mapping[int, Sequence[tuple[int, float]]], commits: Sequence[Commit]) -> list[float]:
    """Per produced record, ms from its produce time to the first poll that saw it committed.

    `produced`: partition -> (offset, produce time in ms) in offset order. A record never seen
    committed has no latency (the caller compares counts).
    """
    seen: dict[int, tuple[list[int], list[float]]] = {}
    for c in sorted(commits, key=lambda c: c.at_ms):
        offsets, times = seen.setdefault(c.partition, ([], []))
        if not offsets or c.offset > offsets[-1]:
            offsets.append(c.offset)
            times.append(c.at_ms)
    out: list[float] = []
    for partition, records in produced.items():
        offsets, times = seen.get(partition, ([], []))
        for offset, produced_ms in records:
            # The committed offset is the next one to read: record `offset` is in once it exceeds it.
            at = bisect.bisect_right(offsets, offset)
            if at < len(offsets):
                out.append(times[at] - produced_ms)
    return out


def rate(records: int, seconds: float) -> float:
    return records / seconds if seconds > 0 else math.nan
