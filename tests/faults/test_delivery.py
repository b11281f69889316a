"""Delivery safety at the edges, for real: a batch that fails for good, a zombie member, retried dead letters,
readiness during an outage, a broker restart inside a rebalance."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from mds_sink import metrics
from mds_sink.http.server import side_port
from mds_sink.sink.health import PROBE_INTERVAL_S
from tests.faults.test_outages import assert_exactly_once, no_dead_letters, produce_slowly, stream, written
from tests.support import (
    CRASHED,
    Scenario,
    bar,
    drained,
    make_scenario,
    running_sink,
    stack,
    start_sink_process,
    wait_until,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ledger(scenario: Scenario) -> dict[tuple[str, int], tuple[int, int]]:
    """(next_offset, epoch) per partition of the scenario's group."""
    found = scenario.rows(
        None,
        "SELECT topic, partition, next_offset, epoch FROM sink_offsets WHERE consumer_group = %s",
        (scenario.settings.kafka.group_id,),
        url=scenario.owner_url,
    )
    return {(str(t), int(p)): (int(o), int(e)) for t, p, o, e in found}


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def test_a_write_permission_revoked_mid_stream_stops_the_sink_and_a_restart_loses_nothing(tmp_path: Path) -> None:
    scenario = make_scenario(
        partitions=3,
        tables=["bars"],
        batching={"max_rows": 200, "max_ms": 50},
        retry={"initial_backoff_s": 0.05, "max_backoff_s": 0.2, "unknown_error_attempts": 3},
    )
    tenants = [scenario.add_tenant(n) for n in ("p1", "p2")]
    records = stream(tenants, symbols=40, minutes=60)  # 4,800 bars, in batches of at most 200
    writer = scenario.settings.database.writer_role
    log = tmp_path / "sink.log"
    producer = produce_slowly(scenario, records, chunks=30, pause_s=0.2)
    proc = start_sink_process(scenario.settings, log)
    revoked = False
    try:
        wait_until(lambda: written(scenario, tenants) >= 1000, timeout_s=120, what="a first part written")
        with psycopg.connect(scenario.owner_url, autocommit=True) as conn:
            # The writer reaches the table only through its tenant view (migration 0007).
            conn.execute(f'REVOKE INSERT, UPDATE ON tenant_view.bars_minute FROM "{writer}"')
        revoked = True
        # Every batch after this one fails for good ("permission denied", neither poison nor transient).
        assert proc.wait(timeout=60) == 3, log.read_text()[-3000:]
        stopped_at = written(scenario, tenants)
        with psycopg.connect(scenario.owner_url, autocommit=True) as conn:
            conn.execute(f'GRANT INSERT, UPDATE ON tenant_view.bars_minute TO "{writer}"')
        revoked = False
        producer.join(timeout=120)
        proc = start_sink_process(scenario.settings, log)
        ends = scenario.end_offsets()
        assert sum(ends.values()) == len(records)
        wait_until(
            lambda: all(scenario.committed().get(tp) == o for tp, o in ends.items() if o > 0),
            timeout_s=180,
            what="the restarted sink committed everything",
        )
    finally:
        if revoked:
            with psycopg.connect(scenario.owner_url, autocommit=True) as conn:
                conn.execute(f'GRANT INSERT, UPDATE ON tenant_view.bars_minute TO "{writer}"')
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "permission denied for view bars_minute" in text
    assert 1000 <= stopped_at < len(records)
    assert_exactly_once(scenario, tenants, per_tenant=2400)
    assert {tp: o for tp, (o, _epoch) in ledger(scenario).items()} == ends
    no_dead_letters(scenario)


def test_a_zombie_member_writes_nothing_after_its_partitions_moved_and_the_ledger_never_goes_back(
    tmp_path: Path,
) -> None:
    # A long max_ms: the first member holds its batch, unflushed, while it is stopped.
    scenario = make_scenario(
        partitions=2,
        tables=["bars"],
        batching={"max_rows": 10_000, "max_ms": 4_000},
        kafka={"session_timeout_ms": 6_000},
    )
    tenant = scenario.add_tenant("zombie")
    keys = [(f"Z{s}", m) for s in range(10) for m in range(10)]
    original = [bar(tenant, symbol, m, close=10.0) for symbol, m in keys]
    corrected = [bar(tenant, symbol, m, close=20.0) for symbol, m in keys]  # same revision, later offsets
    zombie_port = free_port()
    env_port = {"MDS_SINK_HTTP__PORT": str(zombie_port)}
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    zombie = start_sink_process(scenario.settings, log_a, env=env_port)
    successor: subprocess.Popen[bytes] | None = None
    history: list[dict[tuple[str, int], tuple[int, int]]] = []
    watching = threading.Event()

    def watch_ledger() -> None:  # bounded by the test: stops when `watching` is cleared
        while watching.is_set():
            history.append(ledger(scenario))
            time.sleep(0.05)

    status = f"http://127.0.0.1:{zombie_port}/status"
    try:
        wait_until(lambda: len(ledger(scenario)) == 2, timeout_s=60, what="the first member to claim both partitions")
        scenario.produce("bars", original)
        wait_until(lambda: get_json(status)["buffered_records"] == 100, timeout_s=30, what="the batch held")
        zombie.send_signal(signal.SIGSTOP)  # a stall: a GC pause, a frozen VM
        successor = start_sink_process(scenario.settings, log_b)
        wait_until(
            lambda: sorted(e for _o, e in ledger(scenario).values()) == [2, 2],
            timeout_s=60,
            what="the second member to take both partitions over",
        )
        scenario.produce("bars", corrected)
        ends = scenario.end_offsets()
        wait_until(
            lambda: {tp: o for tp, (o, _e) in ledger(scenario).items()} == ends,
            timeout_s=60,
            what="the second member to write everything",
        )
        assert scenario.rows(tenant, "SELECT DISTINCT close FROM bars") == [(20.0,)]
        watching.set()
        watcher = threading.Thread(target=watch_ledger, daemon=True)
        watcher.start()
        zombie.send_signal(signal.SIGCONT)  # wakes up with the original records in hand, past its max_ms
        # It either finds its flush fenced and stops, or learns it lost the partitions first and rejoins.
        wait_until(
            lambda: zombie.poll() is not None or max(e for _o, e in ledger(scenario).values()) >= 3,
            timeout_s=60,
            what="the zombie to stop or rejoin",
        )
        scenario.produce("bars", [bar(tenant, "AFTER", 0, close=30.0)])
        ends = scenario.end_offsets()
        wait_until(
            lambda: {tp: o for tp, (o, _e) in ledger(scenario).items()} == ends,
            timeout_s=90,
            what="the group to write the last record",
        )
    finally:
        watching.clear()
        for proc in (zombie, successor):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    assert scenario.rows(tenant, "SELECT symbol, close, count(*) FROM bars GROUP BY 1, 2 ORDER BY 1") == [
        ("AFTER", 30.0, 1),
        *[(f"Z{s}", 20.0, 10) for s in range(10)],
    ]
    for tp in ends:
        seen = [h[tp][0] for h in history if tp in h]
        assert seen == sorted(seen), f"{tp}: the ledger went back: {seen}"
    no_dead_letters(scenario)


def test_one_dead_letter_per_bad_record_while_the_database_is_away_and_readiness_says_so() -> None:
    scenario = make_scenario(
        partitions=1,
        tables=["bars"],
        batching={"max_rows": 500, "max_ms": 50},
        retry={"initial_backoff_s": 0.1, "max_backoff_s": 0.5, "breaker_threshold": 1_000},
    )
    tenant = scenario.add_tenant("dl-once")
    good = [bar(tenant, "ONCE", m, close=10.0 + m) for m in range(10)]
    bad = {**bar(tenant, "ONCE", 99, close=10.0), "high": 1.0}  # high below low: dead-lettered at validation
    timeout_s = scenario.settings.database.connect_timeout_s
    with running_sink(scenario.settings) as worker:
        wait_until(lambda: bool(worker.state.assignment), timeout_s=60, what="the sink to join")
        port = side_port(worker)
        assert port is not None and port.address is not None
        ready = f"http://{port.address[0]}:{port.address[1]}/readyz"
        assert get_json(ready)["status"] == "ready"

        def retries() -> float:
            return metrics.REGISTRY.get_sample_value("mds_sink_retries_total", {"error_class": "transient"}) or 0.0

        before = retries()
        stack("stop-pg")
        try:
            stopped = time.monotonic()

            def unready() -> bool:
                try:
                    get_json(ready)
                except urllib.error.HTTPError as exc:
                    return exc.code == 503
                return False

            wait_until(unready, timeout_s=timeout_s + PROBE_INTERVAL_S + 2, what="/readyz to turn 503")
            unready_after = time.monotonic() - stopped
            scenario.produce("bars", [*good[:5], bad, *good[5:]])
            wait_until(lambda: retries() >= before + 3, timeout_s=60, what="the batch retried three times")
        finally:
            stack("start-pg")
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), timeout_s=60, what="everything committed once the database is back")
        wait_until(lambda: worker.ready() is None, timeout_s=30, what="ready again")
    assert unready_after <= timeout_s + PROBE_INTERVAL_S + 2
    assert scenario.rows(tenant, "SELECT count(*) FROM bars") == [(10,)]
    letters = scenario.dead_letters("bars", expect=1)
    headers = [dict(m.headers() or []) for m in letters]
    # The bad record was the sixth produced to the one partition: source offset 5, dead-lettered once.
    assert [(h["mds.dlq.source.offset"], h["mds.dlq.reason"]) for h in headers] == [(b"5", b"ohlc_inconsistent")]


def test_a_broker_restart_inside_a_rebalance_does_not_crash_either_member() -> None:
    scenario = make_scenario(partitions=4, tables=["bars"], batching={"max_rows": 200, "max_ms": 50})
    tenant = scenario.add_tenant("rebalance")
    first = [bar(tenant, f"R{s}", m, close=10.0 + m) for s in range(8) for m in range(10)]
    later = [bar(tenant, f"R{s}", m, close=10.0 + m) for s in range(8) for m in range(10, 20)]
    with running_sink(scenario.settings) as one:
        scenario.produce("bars", first)
        wait_until(lambda: drained(one, scenario.end_offsets()), what="the first records committed")
        with running_sink(scenario.settings) as two:
            # The second member's join starts a rebalance; the broker goes away in the middle of it.
            stack("restart-kafka")
            scenario.produce("bars", later)
            ends = scenario.end_offsets()
            wait_until(
                lambda: all(scenario.committed().get(tp) == o for tp, o in ends.items()),
                timeout_s=180,
                what="the group to commit everything after the restart",
            )
            assert id(one) not in CRASHED and id(two) not in CRASHED
            wait_until(
                lambda: len(one.state.assignment) + len(two.state.assignment) == 4,
                timeout_s=60,
                what="every partition assigned",
            )
    assert scenario.rows(tenant, "SELECT count(*), count(DISTINCT (symbol, ts)) FROM bars") == [(160, 160)]
    no_dead_letters(scenario)
