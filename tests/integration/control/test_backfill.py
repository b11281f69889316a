"""Time-range backfill against the real broker and database: `mds-sink backfill` end to end.

Records carry explicit Kafka timestamps (CreateTime), so the range is exact whatever the clock does:
`before` ends an hour before the range, `after` starts at its end. A live sink first drains the
topic; the test then deletes rows as a restore from an old backup would, and backfills the range.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from mds_sink.cli.app import app
from mds_sink.kafka.clients import admin_config, producer_config
from tests.support import Scenario, bar, drained, make_scenario, read_topic, running_sink, sink_env, wait_until

# Kafka timestamps (ms): the range is [T_RANGE, T_AFTER), an hour in the last three. Recent on purpose:
# the broker rolls and deletes segments of records older than retention.ms (7 days) within minutes.
T_BEFORE = (int(time.time()) // 3600 - 3) * 3_600_000
T_RANGE = T_BEFORE + 3_600_000
T_AFTER = T_RANGE + 3_600_000
COLUMNS = "ts, symbol, open, high, low, close, volume, vwap, trade_count, revision"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


RANGE = ["--from", iso(T_RANGE), "--to", iso(T_AFTER)]


@dataclass
class Produced:
    record: dict[str, Any]
    at_ms: int  # its Kafka timestamp
    order: int  # production order (one key stays in one partition: its offsets follow this)


def produce(
    scenario: Scenario, records: list[tuple[dict[str, Any], int]], raw: list[tuple[bytes, int]] | None = None
) -> None:
    encoder = scenario.encoder("bars")
    producer = Producer(producer_config(scenario.settings))
    for record, at_ms in records:
        producer.produce(scenario.topic("bars"), key=encoder.key(record), value=encoder.encode(record), timestamp=at_ms)
    for value, at_ms in raw or []:
        producer.produce(scenario.topic("bars"), key=b"raw", value=value, timestamp=at_ms)
    assert producer.flush(30) == 0


def expected(records: list[Produced], window: tuple[int, int]) -> list[tuple[Any, ...]]:
    """What the range should leave for its keys: per key the highest revision, then the latest record."""
    best: dict[tuple[str, str], tuple[int, int, dict[str, Any]]] = {}
    for p in records:
        if not window[0] <= p.at_ms < window[1]:
            continue
        key = (p.record["ts"], p.record["symbol"])
        rank = (p.record["revision"], p.order)
        if key not in best or rank > best[key][:2]:
            best[key] = (*rank, p.record)
    out = []
    for (_ts, symbol), (_rev, _order, r) in sorted(best.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        ts = datetime.fromisoformat(r["ts"].replace("Z", "+00:00"))
        out.append((ts, symbol, r["open"], r["high"], r["low"], r["close"], r["volume"], r["vwap"], 10, r["revision"]))
    return sorted(out)


def stored(scenario: Scenario, tenant: str, where: str = "true") -> list[tuple[Any, ...]]:
    rows = scenario.rows(
        tenant, f"SELECT {COLUMNS} FROM public.bars_minute WHERE {where} ORDER BY ts, symbol", url=scenario.owner_url
    )
    return sorted(rows)


def physical(scenario: Scenario, tenant: str) -> list[tuple[Any, ...]]:
    """Each row's physical version: an update, even to the same values, changes xmin."""
    return scenario.rows(
        tenant,
        "SELECT symbol, ts, xmin::text, ctid::text FROM public.bars_minute ORDER BY 1, 2",
        url=scenario.owner_url,
    )


def cli(scenario: Scenario, *args: str, env: Mapping[str, str] | None = None) -> Any:
    result = CliRunner().invoke(
        app, list(args), env={**{k: str(v) for k, v in sink_env(scenario.settings).items()}, **(env or {})}
    )
    return result


def job_of(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("backfill ", "dry run ")) and ": offsets" in line:
            return line.split()[2 if line.startswith("dry run") else 1].rstrip(":")
    raise AssertionError(f"no job id in {output!r}")


def show(scenario: Scenario, job: str) -> dict[str, Any]:
    result = cli(scenario, "backfill", "show", job, "--json")
    assert result.exit_code == 0, result.output
    loaded: dict[str, Any] = json.loads(result.output)
    return loaded


@dataclass
class World:
    scenario: Scenario
    tenant: str
    records: list[Produced]
    bad_offset: tuple[int, int]  # partition, offset of the undecodable record in the range


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """Before, range and after on three partitions, drained by a live sink; corrections in the range
    arrive newest revision first; KEEP's newest revision is after the range."""
    scenario = make_scenario(partitions=3, tables=("bars",))
    tenant = scenario.add_tenant("backfill")
    made: list[Produced] = []

    def add(record: dict[str, Any], at_ms: int) -> tuple[dict[str, Any], int]:
        made.append(Produced(record, at_ms, len(made)))
        return record, at_ms

    batch = [add(bar(tenant, f"BEF{i % 10}", i), T_BEFORE + i) for i in range(30)]
    batch += [add(bar(tenant, f"RNG{i % 20}", i // 20, close=100 + i), T_RANGE + i) for i in range(400)]
    batch += [add(bar(tenant, f"RNG{i}", 0, close=200.0, revision=2), T_RANGE + 500 + i) for i in range(5)]
    batch += [add(bar(tenant, f"RNG{i}", 0, close=150.0, revision=1), T_RANGE + 600 + i) for i in range(5)]
    batch += [add(bar(tenant, "KEEP", 0, close=111.0, revision=1), T_RANGE + 700)]
    # In timestamp order: a record produced after the range's end is past its end offset, whatever its time.
    produce(scenario, batch, raw=[(b"\x07not avro", T_RANGE + 800)])
    after = [add(bar(tenant, f"AFT{i % 10}", i), T_AFTER + i) for i in range(30)]
    after += [add(bar(tenant, "KEEP", 0, close=333.0, revision=3), T_AFTER + 100)]
    produce(scenario, after)
    raw = [m for m in read_topic(scenario.settings, scenario.topic("bars")) if m.key() == b"raw"]
    assert len(raw) == 1
    with running_sink(scenario.settings) as worker:
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), timeout_s=60, what="the live sink to drain the topic")
    # A restore from a backup older than the range: every row gone but the newest KEEP.
    with psycopg.connect(scenario.owner_url) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
        conn.execute("DELETE FROM public.bars_minute WHERE symbol <> 'KEEP'")
    yield World(scenario, tenant, made, (raw[0].partition(), raw[0].offset()))


def test_exactly_the_range_lands_with_corrections_and_dead_letters_and_the_live_group_never_moves(
    world: World,
) -> None:
    s, tenant = world.scenario, world.tenant
    committed = s.committed()
    assert committed == s.end_offsets()  # the live sink committed everything
    result = cli(s, "backfill", "--topic", s.topic("bars"), *RANGE)
    assert result.exit_code == 0, result.output
    job = job_of(result.output)

    in_range = expected(world.records, (T_RANGE, T_AFTER))
    keep = [r for r in in_range if r[1] == "KEEP"]
    assert keep and keep[0][9] == 1  # the range holds KEEP's revision 1 only ...
    rows = stored(s, tenant)
    # ... the database keeps revision 3; every other key of the range is back, row for row.
    assert [(r[1], r[5], r[9]) for r in rows if r[1] == "KEEP"] == [("KEEP", 333.0, 3)]
    assert [r for r in rows if r[1] != "KEEP"] == [r for r in in_range if r[1] != "KEEP"]
    assert {r[1] for r in rows if r[1].startswith("RNG") and r[9] == 2} == {f"RNG{i}" for i in range(5)}
    assert not [r for r in rows if r[1].startswith(("BEF", "AFT"))]  # nothing outside the range

    report = show(s, job)
    assert report["state"] == "succeeded"
    totals = report["totals"]
    assert (totals["records"], totals["skipped"], totals["dead_letters"]) == (412, 0, 1)
    # 400 keys written; a correction's revision 2 is a second change where it came in a later batch
    # than its revision 0; revision 1 after it and KEEP's revision 1 change nothing.
    assert 400 <= totals["rows_changed"] <= 405
    assert totals["rows_changed"] + totals["rows_unchanged"] <= 411
    assert sum(p["records"] for p in report["partitions"]) == 412
    # The live group's offsets did not move, and the backfill's group was never a group.
    assert s.committed() == committed
    groups = AdminClient(admin_config(s.settings)).list_consumer_groups().result(timeout=30)
    assert not [g.group_id for g in groups.valid if ".backfill." in g.group_id and job in g.group_id]

    dead = [
        m
        for m in read_topic(s.settings, s.topic("bars") + ".dlq")
        if dict(m.headers())["mds.dlq.group"] == f"{s.settings.kafka.group_id}.backfill.{job}".encode()
    ]
    assert len(dead) == 1
    headers = dict(dead[0].headers())
    assert dead[0].value() == b"\x07not avro" and dead[0].key() == b"raw"
    assert headers["mds.dlq.stage"] == b"decode"
    assert headers["mds.dlq.source.topic"] == s.topic("bars").encode()
    assert (int(headers["mds.dlq.source.partition"]), int(headers["mds.dlq.source.offset"])) == world.bad_offset
    assert headers["mds.dlq.source.timestamp"] == str(T_RANGE + 800).encode()


def test_a_second_run_changes_no_row(world: World) -> None:
    s, tenant = world.scenario, world.tenant
    before = physical(s, tenant)
    result = cli(s, "backfill", "--topic", s.topic("bars"), *RANGE)
    assert result.exit_code == 0, result.output
    report = show(s, job_of(result.output))
    assert report["totals"]["rows_changed"] == 0
    assert report["totals"]["rows_unchanged"] + report["totals"]["dead_letters"] >= 401
    assert physical(s, tenant) == before  # not one row rewritten


def test_dry_run_writes_nothing_and_a_tenant_filter_keeps_to_its_tenant(world: World) -> None:
    s = world.scenario
    other = s.add_tenant("other")
    later = ["--from", iso(T_AFTER + 5_000), "--to", iso(T_AFTER + 60_000)]
    produce(s, [(bar(other, "OTH", 0), T_AFTER + 10_000), (bar(world.tenant, "MINE", 0), T_AFTER + 10_001)])
    dry = cli(s, "backfill", "--topic", s.topic("bars"), *later, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines()[-1] == "2 records read, 2 would change, 0 unchanged, 0 dead letters"
    assert stored(s, other) == [] and stored(s, world.tenant, "symbol = 'MINE'") == []

    only = cli(s, "backfill", "--topic", s.topic("bars"), *later, "--tenant", other)
    assert only.exit_code == 0, only.output
    totals = show(s, job_of(only.output))["totals"]
    assert totals == {"records": 2, "skipped": 1, "rows_changed": 1, "rows_unchanged": 0, "dead_letters": 0}
    assert [r[1] for r in stored(s, other)] == ["OTH"]
    assert stored(s, world.tenant, "symbol = 'MINE'") == []  # another tenant's record: not written


def test_an_empty_range_and_a_range_older_than_retention_say_so() -> None:
    s = make_scenario(partitions=2, tables=("bars",))
    tenant = s.add_tenant("retention")
    produce(s, [(bar(tenant, f"R{i}", i), T_RANGE + i * 1000) for i in range(10)])
    empty = cli(s, "backfill", "--topic", s.topic("bars"), "--from", iso(T_AFTER), "--to", iso(T_AFTER + 60_000))
    assert empty.exit_code == 0, empty.output
    assert empty.output.strip() == (
        f"nothing to backfill: no record of {s.topic('bars')} in [{iso(T_AFTER)[:-1]}.000Z, "
        f"{iso(T_AFTER + 60_000)[:-1]}.000Z)"
    )
    # Retention deleted the first records of partition 0 (as delete.retention would).
    records = read_topic(s.settings, s.topic("bars"))
    first = sorted((m.offset(), m.timestamp()[1]) for m in records if m.partition() == 0)
    assert len(first) >= 3
    admin = AdminClient(admin_config(s.settings))
    for future in admin.delete_records([KafkaTopicPartition(s.topic("bars"), 0, first[2][0])]).values():
        future.result(timeout=30)
    refused = cli(s, "backfill", "--topic", s.topic("bars"), *RANGE)
    assert refused.exit_code == 1
    kept = datetime.fromtimestamp(first[2][1] / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert refused.output == (
        f"mds-sink: --from {iso(T_RANGE)[:-1]}.000Z is older than the retention of {s.topic('bars')}[0]: "
        f"records of the range were deleted; the earliest time still available is {kept}\n"
    )
    later = cli(s, "backfill", "--topic", s.topic("bars"), "--from", kept, "--to", iso(T_AFTER))
    assert later.exit_code == 0, later.output


def test_killed_midway_and_resumed_gives_the_same_rows() -> None:
    s = make_scenario(partitions=3, tables=("bars",))
    tenant = s.add_tenant("resume")
    made = [
        Produced(bar(tenant, f"K{i % 30}", i // 30, close=10 + i % 7, revision=i % 3), T_RANGE + i, i)
        for i in range(1500)
    ]
    produce(s, [(p.record, p.at_ms) for p in made])
    env = {**{k: str(v) for k, v in sink_env(s.settings).items()}, "MDS_SINK_BATCHING__MAX_ROWS": "50"}
    # Slowly (--rate), so that it is killed with some partitions part-way.
    proc = subprocess.Popen(
        [sys.executable, "-m", "mds_sink", "backfill", "--topic", s.topic("bars"), *RANGE, "--rate", "300"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        job: list[str] = []

        def part_way() -> bool:
            if not job:
                listed = cli(s, "backfill", "list", "--json")
                mine = [j for j in json.loads(listed.output) if j["topics"] == [s.topic("bars")]]
                job.extend(j["job"] for j in mine)
                return False
            done = int(show(s, job[0])["progress"]["done"])
            return 300 < done < 1200

        wait_until(part_way, timeout_s=60, what="the backfill to be part-way")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Its session ends with it, and with the session the job's lock: nobody runs it now.
    wait_until(lambda: show(s, job[0])["state"] == "interrupted", timeout_s=30, what="the job to be interrupted")
    interrupted = show(s, job[0])
    assert 0 < interrupted["progress"]["done"] < 1500
    resumed = cli(s, "backfill", "resume", job[0], env={"MDS_SINK_BATCHING__MAX_ROWS": "50"})
    assert resumed.exit_code == 0, resumed.output
    report = show(s, job[0])
    assert report["state"] == "succeeded"
    assert report["progress"] == {"offsets": 1500, "done": 1500}
    # Each record counted once across the two runs: positions moved with the rows they covered.
    assert report["totals"]["records"] == 1500
    assert stored(s, tenant) == expected(made, (T_RANGE, T_AFTER))
