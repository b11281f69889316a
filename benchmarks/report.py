"""One summary line per figure, as the run goes."""

from __future__ import annotations

import os
import statistics

from benchmarks.bounds import Consumed, Written
from benchmarks.e2e import Drained
from benchmarks.latency import Latency
from benchmarks.sidebyside import Round


def line(name: str, value: str, detail: str = "") -> None:
    print(f"{name:<30} {value:>18}  {detail}".rstrip(), flush=True)


def consumed(c: Consumed) -> None:
    line("(1) consume+decode+validate", f"{c.rate:,.0f} rec/s", f"{c.records:,} in {c.seconds:.1f}s, no database")


def written(phase: str, w: Written, batches: int) -> None:
    detail = f"{w.rows:,} rows in {w.seconds:.1f}s, {batches} batches, no Kafka"
    line(f"(2) copy+upsert, {phase}", f"{w.rate:,.0f} rec/s", detail)


def drained(d: Drained) -> None:
    sink = d.per_sink[0]
    line("(3) end to end, one sink", f"{d.rate:,.0f} rec/s", f"{d.records:,} in {d.seconds:.1f}s from ready")
    line("    with start-up", f"{d.rate_with_startup:,.0f} rec/s", f"ready after {sink.ready_s:.1f}s")
    busy = f"machine busy {d.machine_busy:.0%} of {os.cpu_count()} cores (broker, database, sink)"
    line("    sink CPU", f"{d.cpu_s_per_million:.1f} s/M rec", busy)
    rest = d.machine_cpu_s_per_million - d.cpu_s_per_million
    line("    machine CPU", f"{d.machine_cpu_s_per_million:.1f} s/M rec", f"of which database + broker {rest:.1f}")
    line("    sink peak RSS", f"{sink.peak_rss_mb:,.0f} MB", f"VmHWM while draining {d.records:,} records")


def ratio(value: float, lower: float) -> None:
    line("    ratio (3) / min((1), (2))", f"{value:.2f}", f"smaller bound {lower:,.0f} rec/s")


def latency(m: Latency) -> None:
    target = f"target p99 <= {m.max_ms_setting + 100} ms"
    for name, p in (("latency to Kafka commit", m.kafka), ("latency to row committed", m.ledger)):
        figures = f"{p.p50_ms:,.0f} / {p.p95_ms:,.0f} / {p.p99_ms:,.0f} ms"
        unseen = f", {p.never_seen} never seen" if p.never_seen else ""
        line(f"{name} p50/p95/p99", figures, f"max {p.max_ms:,.0f} ms{unseen}; {target}")
    load = f"{m.rate:,.0f} rec/s offered for {m.seconds:.0f}s; peak RSS {m.peak_rss_mb:,.0f} MB"
    line("    sink CPU at that load", f"{m.cpu_s / m.seconds:.0%} of a core", load)


def scaled(d: Drained, one: float | None) -> None:
    peak = max(s.peak_rss_mb for s in d.per_sink)
    detail = (
        f"{d.records:,} in {d.seconds:.1f}s, sinks {d.cpu_s_per_million:.1f} and machine "
        f"{d.machine_cpu_s_per_million:.1f} CPU s/M rec ({d.machine_busy:.0%} busy), peak RSS {peak:,.0f} MB each"
    )
    line("two sinks, one group", f"{d.rate:,.0f} rec/s", detail)
    if one is not None:
        line("    vs one sink", f"x{d.rate / one:.2f}")


def side_by_side(n: int, r: Round) -> None:
    first = "B" if r.b_first else "A"
    detail = (
        f"A {r.a.rate(r.seconds):,.0f}, B {r.b.rate(r.seconds):,.0f} rec/s over {r.seconds:.1f}s; sink CPU "
        f"A {r.a.cpu_s_per_million:.1f}, B {r.b.cpu_s_per_million:.1f} s/M rec; {first} started first"
    )
    line(f"side by side, round {n}", f"B/A {r.ratio:.3f}", detail)


def side_by_side_summary(ratios: list[float], b_env: dict[str, str]) -> None:
    settings = " ".join(f"{k}={v}" for k, v in b_env.items())
    spread = f"{min(ratios):.3f}-{max(ratios):.3f}"
    line("    B/A over the rounds", spread, f"median {statistics.median(ratios):.3f}; B: {settings}")
