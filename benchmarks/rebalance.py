"""How a rebalance stops the group: `python -m benchmarks.rebalance [--protocol consumer|classic]`.

A steady load of bars (`--rate` records/s) goes to a fresh 12-partition topic while sink A drains it.
Sink B joins (after `--before-s`), then leaves with SIGTERM (after `--during-s` more). Every 50 ms the
group's committed offsets are read without joining (OffsetFetch) and each sink's /status assignment.

Printed, for the join and for the leave:
- `balanced after`: from B's start (or its SIGTERM) until the two sinks hold every partition between
  them with none held twice, B holding half on the join, A all of them after the leave;
- `kept partitions' longest commit pause`: over the partitions A holds before and after, the longest
  time between two advances of their committed offset, in the window from B's start (or SIGTERM)
  until balanced + 2 s; beside it the same figure over the steady seconds before B started, which is
  what the batching alone gives (`batching.max_ms` and the commit cadence).

Bounded: the load stops after before + during + `--after-s` seconds, each sink after its drain deadline.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from benchmarks import benchdb, data
from benchmarks.sinkproc import CommitWatch, Sink
from mds_sink.avro.codec import frame, load_schema_file, local_schema_id, strip_logical_types
from mds_sink.config.resources import resource_dir
from mds_sink.config.settings import load_settings
from mds_sink.core.catalog import TABLES

PARTITIONS = 12
TICK_S = 0.05
RESULTS = Path(__file__).parent / "results"


@dataclass
class Sample:
    at: float
    committed: dict[int, int]
    held: dict[str, set[int]]


def _load(bootstrap: str, topic: str, rate: float, seconds: float, stop: threading.Event) -> int:
    """Bars at `rate` records/s for `seconds`, in 20 ms steps; returns the records acknowledged."""
    shape = data.Shape(records=10_000_000, partitions=PARTITIONS, tenants=4, symbols=500, quote_share=0)
    tenants = shape.tenant_ids()
    schema = load_schema_file(resource_dir("schemas") / f"{TABLES['bars'].record}.avsc")
    parsed = fastavro.parse_schema(strip_logical_types(schema))
    schema_id = local_schema_id(schema)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    out = io.BytesIO()
    started, sent = time.monotonic(), 0
    while not stop.is_set() and time.monotonic() - started < seconds:
        due = int((time.monotonic() - started) * rate)
        while sent < due:
            key, record = data.bar(shape, tenants, sent)
            out.seek(0)
            out.truncate()
            fastavro.schemaless_writer(out, parsed, record)
            producer.produce(topic, value=frame(schema_id, out.getvalue()), key=key)
            sent += 1
        producer.poll(0)
        time.sleep(0.02)
    if producer.flush(60):
        raise RuntimeError("the load was not acknowledged")
    return sent


def _held(sink: Sink) -> set[int]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sink.port}/status", timeout=1) as reply:
            status = json.load(reply)
    except (OSError, ValueError):
        return set()
    return {int(p["partition"]) for p in status.get("partitions", []) if p.get("claimed")}


def _balanced(sample: Sample, a: str, b: str | None) -> bool:
    held_a, held_b = sample.held.get(a, set()), sample.held.get(b, set()) if b else set()
    every = held_a | held_b == set(range(PARTITIONS)) and not held_a & held_b
    return every and (len(held_b) == PARTITIONS // 2 if b else len(held_a) == PARTITIONS)


def _longest_pause(samples: list[Sample], partitions: set[int], start: float, end: float) -> float:
    """The longest time a partition's committed offset stood still in [start, end], over `partitions`."""
    longest = 0.0
    for p in partitions:
        last_move, last = start, None
        for s in samples:
            if not start <= s.at <= end:
                continue
            offset = s.committed.get(p)
            if last is not None and offset != last:
                longest = max(longest, s.at - last_move)
                last_move = s.at
            last = offset
        longest = max(longest, end - last_move)
    return longest


def run(protocol: str, rate: float, before_s: float, during_s: float, after_s: float) -> dict[str, Any]:
    base = load_settings()
    tenant_ids = data.Shape(records=1, partitions=PARTITIONS, tenants=4, symbols=500).tenant_ids()
    settings = benchdb.prepare(base, tenant_ids)
    bootstrap = settings.kafka.bootstrap_servers
    run_id = uuid.uuid4().hex[:8]
    topic, group = f"bench.rebalance.{run_id}", f"bench.rebalance.{run_id}.sink"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=30)
    env: Mapping[str, str] = {
        **os.environ,
        **{f"MDS_SINK_DATABASE__{k.upper()}": v for k, v in benchdb.urls(settings).items()},
        **{f"MDS_SINK_TOPICS__{t.upper()}": "" for t in TABLES},
        "MDS_SINK_TOPICS__BARS": topic,
        "MDS_SINK_KAFKA__GROUP_ID": group,
        "MDS_SINK_KAFKA__GROUP_PROTOCOL": protocol,
        "MDS_SINK_LOG__LEVEL": "INFO",
    }
    logs = RESULTS / f"rebalance-{run_id}"
    logs.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    total_s = before_s + during_s + after_s
    load = threading.Thread(target=_load, args=(bootstrap, topic, rate, total_s, stop), daemon=True)
    watch = CommitWatch(bootstrap, group, [(topic, p) for p in range(PARTITIONS)])
    samples: list[Sample] = []
    a = Sink(env, logs / "a.log", "a")
    b: Sink | None = None
    try:
        a.wait_ready(60)
        load.start()
        t0 = time.monotonic()
        joined_at = left_at = None
        while time.monotonic() - t0 < total_s:
            now = time.monotonic() - t0
            if b is None and joined_at is None and now >= before_s:
                b, joined_at = Sink(env, logs / "b.log", "b"), now
            if b is not None and left_at is None and now >= before_s + during_s:
                b.proc.send_signal(15)
                left_at = now
            committed = {p: o for (_, p), o in watch.committed().items()}
            held = {"a": _held(a)} | ({"b": _held(b)} if b is not None and left_at is None else {})
            samples.append(Sample(time.monotonic() - t0, committed, held))
            time.sleep(TICK_S)
    finally:
        stop.set()
        load.join(timeout=60)
        if b is not None:
            b.stop()
        a.stop()
        watch.close()
    assert joined_at is not None and left_at is not None
    joined = next((s.at for s in samples if s.at >= joined_at and _balanced(s, "a", "b")), None)
    left = next((s.at for s in samples if s.at >= left_at and _balanced(s, "a", None)), None)
    kept_join = set(range(PARTITIONS))
    if joined is not None:
        kept_join = next(s for s in samples if s.at >= joined).held["a"]
    baseline = _longest_pause(samples, set(range(PARTITIONS)), 2.0, joined_at)
    figures = {
        "protocol": protocol,
        "rate": rate,
        "join_balanced_s": None if joined is None else joined - joined_at,
        "join_kept_pause_s": _longest_pause(samples, kept_join, joined_at, (joined or joined_at) + 2.0),
        "leave_balanced_s": None if left is None else left - left_at,
        "leave_kept_pause_s": _longest_pause(samples, kept_join, left_at, (left or left_at) + 2.0),
        "steady_pause_s": baseline,
        "logs": str(logs),
    }
    return figures


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.rebalance", description=__doc__)
    p.add_argument("--protocol", choices=["consumer", "classic"], action="append")
    p.add_argument("--rate", type=float, default=3_000.0)
    p.add_argument("--before-s", type=float, default=12.0)
    p.add_argument("--during-s", type=float, default=20.0)
    p.add_argument("--after-s", type=float, default=15.0)
    args = p.parse_args()
    for protocol in args.protocol or ["consumer", "classic"]:
        f = run(protocol, args.rate, args.before_s, args.during_s, args.after_s)

        def s(v: float | None) -> str:
            return "never" if v is None else f"{v:.2f} s"

        print(
            f"{protocol:9} join:  balanced after {s(f['join_balanced_s'])}, kept partitions' longest commit pause "
            f"{s(f['join_kept_pause_s'])} (steady: {s(f['steady_pause_s'])})"
        )
        print(
            f"{protocol:9} leave: balanced after {s(f['leave_balanced_s'])}, kept partitions' longest commit pause "
            f"{s(f['leave_kept_pause_s'])}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
