"""`python -m benchmarks.run`: the raw bounds, the sink end to end, latency and scale-out, in one run.

Needs the local stack (`eval "$(deploy/local/stack.sh env)"`). Prints one line per figure and
writes the whole result as JSON to benchmarks/results/. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import benchdb, bounds, data, e2e, fill, latency, report, sidebyside
from benchmarks.report import line
from benchmarks.sinkproc import machine_busy
from mds_sink.config.settings import Settings, load_settings
from mds_sink.core.catalog import TABLES
from mds_sink.sink.gc_tuning import tune_for_throughput

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("bounds", "e2e", "latency", "scaleout")
# `consume` is bound (1) alone: a quick look at the consumer side without the database writes.
# `sidebyside`: two sinks at once, B with --b-env (benchmarks/sidebyside.py).
EXTRA_MODES = ("consume", "sidebyside")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--records", type=int, default=1_000_000, help="bars in the backlog (default 1,000,000)")
    p.add_argument("--partitions", type=int, default=12)
    p.add_argument("--tenants", type=int, default=8)
    p.add_argument("--symbols", type=int, default=2_000)
    p.add_argument("--quote-share", type=float, default=0.10, help="quotes as a share of the bars (default 0.10)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {', '.join(MODES)}")
    p.add_argument("--latency-rate", type=float, default=5_000.0, help="offered records/s in latency mode")
    p.add_argument("--latency-seconds", type=float, default=30.0)
    p.add_argument("--timeout-s", type=float, default=900.0, help="limit of each drain")
    p.add_argument("--refill", action="store_true", help="produce the topics again even if they are full")
    p.add_argument(
        "--sink-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the sinks (and the bounds), e.g. MDS_SINK_BATCHING__MAX_ROWS=10000; repeatable",
    )
    p.add_argument(
        "--b-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="sidebyside mode: a setting for sink B only, e.g. MDS_SINK_CONTINUITY__ENABLED=false, or "
        "PYTHONPATH=<another checkout>/src to run that code as B; repeatable",
    )
    p.add_argument("--rounds", type=int, default=3, help="sidebyside mode: rounds, alternating which starts first")
    p.add_argument(
        "--durable",
        action="store_true",
        help="run against the server with fsync=on and synchronous_commit=on (as users run it), restored after; "
        "needs a superuser URL in MDS_STACK_PG_SUPERUSER_URL (deploy/local/stack.sh env sets it)",
    )
    args = p.parse_args(argv)
    if args.durable and not os.environ.get("MDS_STACK_PG_SUPERUSER_URL"):
        p.error("--durable needs MDS_STACK_PG_SUPERUSER_URL: a superuser of the server, to ALTER SYSTEM")
    unknown = set(args.modes.split(",")) - {*MODES, *EXTRA_MODES}
    if unknown:
        p.error(f"unknown mode(s) {', '.join(sorted(unknown))}")
    if ("sidebyside" in args.modes.split(",")) != bool(args.b_env):
        p.error("--modes sidebyside and --b-env go together: --b-env is what sink B does differently")
    for flag, items, code in (("--sink-env", args.sink_env, False), ("--b-env", args.b_env, True)):
        try:
            _settings_env(items, code=code)
        except ValueError as exc:
            p.error(f"{flag}: {exc}")
    return args


def _settings_env(items: list[str], *, code: bool = False) -> dict[str, str]:
    """NAME=VALUE items as environment; `code`: PYTHONPATH too (sink B running another checkout)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not (name.startswith("MDS_SINK_") or (code and name == "PYTHONPATH")):
            allowed = "MDS_SINK_NAME=VALUE or PYTHONPATH=DIR" if code else "MDS_SINK_NAME=VALUE"
            raise ValueError(f"wants {allowed}, got {item!r}")
        out[name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.durable:
        return _run(args)
    with benchdb.durable(os.environ["MDS_STACK_PG_SUPERUSER_URL"]):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    # Read by load_settings below and inherited by the sink processes.
    os.environ.update(_settings_env(args.sink_env))
    modes = args.modes.split(",")
    shape = data.Shape(args.records, args.partitions, args.tenants, args.symbols, args.quote_share)
    tenant_ids = shape.tenant_ids()
    settings = benchdb.prepare(load_settings(), tenant_ids)
    bootstrap = settings.kafka.bootstrap_servers
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = RESULTS / f"logs-{stamp}"
    log_dir.mkdir()
    result: dict[str, Any] = {
        "started": stamp,
        "shape": asdict(shape),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "python": platform.python_version(),
            "postgres": benchdb.server_settings(settings),
        },
        "settings": {"batching": settings.batching.model_dump(), "sink_env": args.sink_env},
    }
    busy = idle_check()
    result["machine"]["busy_before_start"] = busy
    if busy > 0.15:
        line("WARNING", f"{busy:.0%} busy", "before the run: something else is running; figures are unreliable")
    pg = result["machine"]["postgres"]
    profile = "durable: --durable" if args.durable else "test settings; --durable for fsync=on"
    line("postgres", f"fsync={pg['fsync']}", f"synchronous_commit={pg['synchronous_commit']} ({profile})")

    tables = ["bars"] + (["quotes"] if shape.quotes else [])
    topics: dict[str, str] = {}
    for table in tables:
        filled = fill.fill(bootstrap, shape, table, refill=args.refill)
        topics[filled.topic] = table
        how = "reused" if filled.reused else f"{filled.records / filled.seconds:,.0f} rec/s"
        line(f"fill {table}", f"{filled.records:,}", f"{filled.topic} ({how})")
    ends = {
        (topic, p): high for topic in topics for p, (_low, high) in sorted(fill.end_offsets(bootstrap, topic).items())
    }
    sink_env = {
        **os.environ,
        **{f"MDS_SINK_DATABASE__{k.upper()}": v for k, v in benchdb.urls(settings).items()},
        # Every table the run did not fill is switched off (an empty topic setting), so the sinks read nothing else.
        **{f"MDS_SINK_TOPICS__{t.upper()}": "" for t in TABLES},
        **{f"MDS_SINK_TOPICS__{table.upper()}": topic for topic, table in topics.items()},
    }
    sink_env.setdefault("MDS_SINK_LOG__LEVEL", "WARNING")
    # The raw bounds run the sink's code in this process: with the collector tuned as `mds-sink run` tunes it.
    tune_for_throughput()
    result["expected_rows"] = {"bars": data.distinct_bars(shape), "quotes": data.distinct_quotes(shape)}

    ctx = Context(settings, sink_env, ends, tenant_ids, log_dir, args.timeout_s, stamp)
    if "bounds" in modes or "consume" in modes:
        _bounds(ctx, topics, result, write="bounds" in modes)
    if "e2e" in modes:
        _e2e(ctx, result, sinks=1)
    if "latency" in modes:
        measured = latency.measure(
            settings, sink_env, shape, rate=args.latency_rate, seconds=args.latency_seconds, log_dir=log_dir
        )
        result["latency"] = asdict(measured)
        report.latency(measured)
    if "scaleout" in modes:
        _e2e(ctx, result, sinks=2)
    if "sidebyside" in modes:
        _side_by_side(ctx, result, b_env=_settings_env(args.b_env, code=True), rounds=args.rounds)

    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    line("result", str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path))
    return 0


@dataclass(frozen=True)
class Context:
    settings: Settings
    sink_env: dict[str, str]
    ends: dict[tuple[str, int], int]
    tenant_ids: list[str]
    log_dir: Path
    timeout_s: float
    stamp: str


def _bounds(ctx: Context, topics: dict[str, str], result: dict[str, Any], *, write: bool) -> None:
    consumed = bounds.consume_decode(ctx.settings, topics, ctx.ends, ctx.tenant_ids)
    result["consume_decode"] = {
        "records": consumed.records,
        "rejected": consumed.rejected,
        "seconds": consumed.seconds,
        "rate": consumed.rate,
    }
    report.consumed(consumed)
    if not write:
        return
    todo = bounds.batches(consumed, topics, ctx.settings.batching.max_rows)
    del consumed  # the rows live on in the batches; half the memory back before the writes
    for phase in ("fresh", "replay"):
        if phase == "fresh":
            benchdb.empty(ctx.settings)
        written = bounds.write_all(ctx.settings, todo, group=f"bench-raw-{ctx.stamp}")
        result[f"copy_upsert_{phase}"] = {**asdict(written), "rate": written.rate, "batches": len(todo)}
        report.written(phase, written, len(todo))


def _e2e(ctx: Context, result: dict[str, Any], *, sinks: int) -> None:
    drained = e2e.drain(
        ctx.settings, ctx.sink_env, ctx.ends, ctx.tenant_ids, sinks=sinks, log_dir=ctx.log_dir, timeout_s=ctx.timeout_s
    )
    figures = {
        **asdict(drained),
        "rate": drained.rate,
        "rate_with_startup": drained.rate_with_startup,
        "cpu_s_per_million": drained.cpu_s_per_million,
        "machine_cpu_s_per_million": drained.machine_cpu_s_per_million,
    }
    _check_visible(drained.visible, result["expected_rows"])
    if sinks == 1:
        result["e2e"] = figures
        report.drained(drained)
        if "copy_upsert_fresh" in result:
            lower = min(result["consume_decode"]["rate"], result["copy_upsert_fresh"]["rate"])
            result["ratio"] = drained.rate / lower
            report.ratio(result["ratio"], lower)
    else:
        result["scaleout"] = figures
        report.scaled(drained, result["e2e"]["rate"] if "e2e" in result else None)


def _side_by_side(ctx: Context, result: dict[str, Any], *, b_env: dict[str, str], rounds: int) -> None:
    b_settings = benchdb.prepare(load_settings(), ctx.tenant_ids, benchdb.SIDE_B)
    b_urls = {f"MDS_SINK_DATABASE__{k.upper()}": v for k, v in benchdb.urls(b_settings, benchdb.SIDE_B).items()}
    sides = {"A": (ctx.settings, ctx.sink_env), "B": (b_settings, {**ctx.sink_env, **b_urls, **b_env})}
    done = []
    for n in range(rounds):
        r = sidebyside.compare(sides, ctx.ends, b_first=n % 2 == 1, log_dir=ctx.log_dir, timeout_s=ctx.timeout_s)
        done.append(r)
        report.side_by_side(n + 1, r)
    result["sidebyside"] = {"b_env": b_env, "rounds": [{**asdict(r), "ratio": r.ratio} for r in done]}
    report.side_by_side_summary([r.ratio for r in done], b_env)


def idle_check(seconds: float = 2.0) -> float:
    """Share of all cores busy over a moment before the run: the figures assume an otherwise idle machine."""
    before = machine_busy()
    time.sleep(seconds)
    after = machine_busy()
    return (after[0] - before[0]) / max(1.0, after[1] - before[1])


def _check_visible(visible: dict[str, int], expected: dict[str, int]) -> None:
    """Every offset committed must mean every row visible: anything else is a sink bug, not a figure."""
    for table, count in visible.items():
        if count != expected[table]:
            raise SystemExit(f"{table}: {count:,} rows visible, {expected[table]:,} expected")


def _stop(signum: int, _frame: object) -> None:
    # Unwind normally, so every sink this run started is stopped by the `finally` that owns it.
    raise SystemExit(f"stopped by {signal.Signals(signum).name}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    started = time.monotonic()
    code = main()
    print(f"{'':<34} {time.monotonic() - started:>14.0f} s  total", flush=True)
    raise SystemExit(code)
