"""Transient faults never lose, duplicate or dead-letter anything: restarts, kills and stalls, for real."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.support import (
    Scenario,
    bar,
    drained,
    make_scenario,
    read_topic,
    running_sink,
    stack,
    start_sink_process,
    wait_until,
)


def stream(tenants: list[str], symbols: int, minutes: int) -> list[dict[str, Any]]:
    return [bar(t, f"F{s:03d}", m, close=10.0 + m) for m in range(minutes) for t in tenants for s in range(symbols)]


def produce_slowly(scenario: Scenario, records: list[dict[str, Any]], chunks: int, pause_s: float) -> threading.Thread:
    """Produce in chunks with pauses, so faults land mid-stream; bounded by len(records)."""

    def run() -> None:
        size = len(records) // chunks + 1
        for i in range(0, len(records), size):
            scenario.produce("bars", records[i : i + size])
            time.sleep(pause_s)

    thread = threading.Thread(target=run, name="slow-producer", daemon=True)
    thread.start()
    return thread


def written(scenario: Scenario, tenants: list[str]) -> int:
    try:
        return sum(scenario.rows(t, "SELECT count(*) FROM bars")[0][0] for t in tenants)
    except psycopg.OperationalError:  # the database is the thing being restarted
        return -1


def assert_exactly_once(scenario: Scenario, tenants: list[str], per_tenant: int) -> None:
    for tenant in tenants:
        assert scenario.rows(tenant, "SELECT count(*), count(DISTINCT (symbol, ts)) FROM bars") == [
            (per_tenant, per_tenant)
        ]
        assert scenario.rows(tenant, "SELECT count(*) FROM bars WHERE close <> 10.0 + extract(minute FROM ts)") == [
            (0,)
        ]


def no_dead_letters(scenario: Scenario) -> None:
    topic = scenario.settings.topics.dead_letter.replace("{topic}", scenario.topic("bars"))
    assert read_topic(scenario.settings, topic) == []


def test_database_restarted_twice_and_broker_once_mid_stream() -> None:
    scenario = make_scenario(
        partitions=3,
        tables=["bars"],
        batching={"max_rows": 500, "max_ms": 100},
        retry={"initial_backoff_s": 0.1, "max_backoff_s": 2.0},
    )
    tenants = [scenario.add_tenant(n) for n in ("r1", "r2", "r3")]
    records = stream(tenants, symbols=50, minutes=60)  # 9,000 bars
    with running_sink(scenario.settings) as worker:
        producer = produce_slowly(scenario, records, chunks=30, pause_s=0.3)
        for fraction, action in ((0.2, "restart-pg"), (0.4, "restart-pg"), (0.6, "restart-kafka")):
            wait_until(
                lambda f=fraction: written(scenario, tenants) >= f * len(records),
                timeout_s=120,
                what=f"{fraction:.0%} written before {action}",
            )
            stack(action)
        producer.join(timeout=120)
        ends = scenario.end_offsets()
        assert sum(ends.values()) == len(records)
        wait_until(lambda: drained(worker, ends), timeout_s=120, what="every offset committed after the faults")
        assert worker.state.last_flush is not None
    assert_exactly_once(scenario, tenants, per_tenant=3000)
    no_dead_letters(scenario)
    assert scenario.committed() == ends


def test_worker_killed_several_times_then_everything_is_there_once(tmp_path: Path) -> None:
    # A killed member holds its partitions until its session times out: keep that short here.
    scenario = make_scenario(
        partitions=3, tables=["bars"], batching={"max_rows": 300, "max_ms": 50}, kafka={"session_timeout_ms": 6_000}
    )
    tenants = [scenario.add_tenant(n) for n in ("k1", "k2")]
    records = stream(tenants, symbols=60, minutes=60)  # 7,200 bars
    rng = random.Random(11)
    log = tmp_path / "sink.log"
    producer = produce_slowly(scenario, records, chunks=40, pause_s=0.25)
    proc = start_sink_process(scenario.settings, log)
    try:
        for kill in range(3):
            target = written(scenario, tenants) + rng.randint(200, 1500)
            wait_until(
                lambda t=target: written(scenario, tenants) >= min(t, len(records) - 1),
                timeout_s=120,
                what=f"progress before kill {kill + 1}",
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc = start_sink_process(scenario.settings, log)
        producer.join(timeout=120)
        ends = scenario.end_offsets()
        wait_until(
            lambda: all(scenario.committed()[tp] == o for tp, o in ends.items() if o > 0),
            timeout_s=180,
            what="the restarted sink committed everything",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert_exactly_once(scenario, tenants, per_tenant=3600)
    no_dead_letters(scenario)


def test_database_stalled_longer_than_max_poll_interval() -> None:
    scenario = make_scenario(
        partitions=2,
        tables=["bars"],
        batching={"max_rows": 200, "max_ms": 50},
        kafka={"max_poll_interval_ms": 10_000, "session_timeout_ms": 6_000},
    )
    tenant = scenario.add_tenant("stall")
    first = [bar(tenant, f"S{s}", m, close=10.0 + m) for s in range(10) for m in range(20)]
    later = [bar(tenant, f"S{s}", m, close=10.0 + m) for s in range(10) for m in range(20, 60)]
    with running_sink(scenario.settings) as worker:
        scenario.produce("bars", first)
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), what="the first records committed")
        with psycopg.connect(scenario.owner_url) as conn, conn.transaction():
            # Every write blocks on this lock for 15 s: 1.5 times max.poll.interval.ms.
            conn.execute("LOCK TABLE bars_minute IN ACCESS EXCLUSIVE MODE")
            scenario.produce("bars", later)
            stalled_until = time.monotonic() + 15
            while time.monotonic() < stalled_until:
                assert worker.state.revocations == 0
                time.sleep(0.5)
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), what="everything committed after the stall")
        assert worker.state.revocations == 0  # no rebalance: the consumer kept polling, paused
        assert worker.state.assignment == {(scenario.topic("bars"), 0), (scenario.topic("bars"), 1)}
    assert scenario.rows(tenant, "SELECT count(*) FROM bars") == [(600,)]
    no_dead_letters(scenario)
