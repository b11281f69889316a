"""Operators see and replay what failed: `mds-sink dlq stats|inspect|replay` against the real topics."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import psycopg

from mds_sink.dlq.replay import read_dead_letters, replay
from mds_sink.dlq.view import Filters
from tests.support import Scenario, bar, drained, make_scenario, running_sink, sink_env, wait_until


def cli(scenario: Scenario, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mds_sink", *args],
        env=sink_env(scenario.settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_records_of_an_unknown_tenant_land_after_the_tenant_is_added_and_the_dlq_replayed() -> None:
    scenario = make_scenario(partitions=2, tables=["bars"])
    known = scenario.add_tenant("known")
    late = str(uuid.uuid4())  # not a tenant yet
    late_bars = [bar(late, "LATE", m, close=30.0 + m) for m in range(25)]
    scenario.produce("bars", [bar(known, "KNOWN", m) for m in range(10)] + late_bars)
    with running_sink(scenario.settings) as worker:
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), what="first pass committed")

        letters = list(read_dead_letters(scenario.settings, Filters()))
        assert len(letters) == 25
        assert {(d.reason, d.stage, d.tenant, d.replay_count) for d in letters} == {
            ("unknown_tenant", "validate", late, 0)
        }
        stats = json.loads(cli(scenario, "dlq", "stats", "--json"))
        assert stats["total"] == 25
        assert stats["by_reason"] == {"validate/unknown_tenant": 25}
        assert stats["by_topic"] == {scenario.topic("bars"): 25}
        inspected = [
            json.loads(line)
            for line in cli(scenario, "dlq", "inspect", "--json", "--tenant", late, "--limit", "5").splitlines()
        ]
        assert len(inspected) == 5
        assert all(i["record"]["symbol"] == "LATE" and i["reason"] == "unknown_tenant" for i in inspected)

        # Before the tenant exists a replay re-validates and sends nothing back.
        dry = replay(scenario.settings, Filters(reasons=frozenset({"unknown_tenant"})), dry_run=True)
        assert (dry.replayed, dict(dry.still_failing)) == (0, {"unknown_tenant": 25})

        with psycopg.connect(scenario.owner_url, autocommit=True) as conn:
            conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, %s)", (late, f"late-{late[:8]}"))
        first = replay(scenario.settings, Filters(reasons=frozenset({"unknown_tenant"})))
        assert (first.replayed, first.skipped_max_replays, sum(first.still_failing.values())) == (25, 0, 0)
        ends = scenario.end_offsets()
        assert sum(ends.values()) == 35 + 25  # republished to the source topic
        wait_until(lambda: drained(worker, ends), what="replayed records committed")
        assert scenario.rows(late, "SELECT count(*), min(close), max(close) FROM bars") == [(25, 30.0, 54.0)]
        before = scenario.rows(late, "SELECT * FROM bars_minute ORDER BY ts")

        # Again: the replay group already passed these dead letters, so nothing is sent twice.
        second = replay(scenario.settings, Filters(reasons=frozenset({"unknown_tenant"})))
        assert (second.replayed, second.filtered_out) == (0, 0)
        assert scenario.end_offsets() == ends
        # Even from the beginning it is safe: upserts leave every row as it was.
        again = replay(scenario.settings, Filters(reasons=frozenset({"unknown_tenant"})), from_beginning=True)
        assert again.replayed == 25
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), what="second replay committed")
    assert scenario.rows(late, "SELECT * FROM bars_minute ORDER BY ts") == before
    assert scenario.rows(known, "SELECT count(*) FROM bars") == [(10,)]


def test_replay_refuses_records_past_the_replay_limit_and_can_write_directly() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"])
    ghost = str(uuid.uuid4())
    scenario.produce("bars", [bar(ghost, "GHOST", m) for m in range(4)])
    with running_sink(scenario.settings) as worker:
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), what="dead-lettered")
        # Still unknown: each replay sends nothing back, counts them as still failing.
        assert replay(scenario.settings, Filters()).still_failing == {"unknown_tenant": 4}
        limited = replay(scenario.settings, Filters(), max_replays=0, from_beginning=True)
        assert (limited.replayed, limited.skipped_max_replays) == (0, 4)
        with psycopg.connect(scenario.owner_url, autocommit=True) as conn:
            conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, %s)", (ghost, f"ghost-{ghost[:8]}"))
        direct = replay(scenario.settings, Filters(), direct=True, from_beginning=True)
        assert direct.replayed == 4
        assert scenario.end_offsets() == ends  # written to the database, not republished
    assert scenario.rows(ghost, "SELECT count(*) FROM bars") == [(4,)]
