"""The sink end to end: real broker, real database, exact rows and offsets afterwards."""

from __future__ import annotations

import json
import random
import signal
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mds_sink.control.offsets import reset_group
from tests.support import (
    Scenario,
    bar,
    drained,
    iso_ts,
    make_scenario,
    running_sink,
    start_sink_process,
    wait_until,
)

BAR_QUERY = "SELECT symbol, timeframe, ts, close, volume, revision FROM bars ORDER BY symbol, timeframe, ts"


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def expected_bars(records: list[dict[str, Any]], tenant: str) -> list[tuple[Any, ...]]:
    """The final state a correct sink leaves: per key the highest revision, then the latest record."""
    final: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        if r["tenant_id"] != tenant:
            continue
        key = (r["vendor"], r["symbol"], r["timeframe"], r["ts"])
        if key not in final or r["revision"] >= final[key]["revision"]:
            final[key] = r
    return sorted(
        (r["symbol"], r["timeframe"], ts(r["ts"]), r["close"], r["volume"], r["revision"]) for r in final.values()
    )


def mixed_stream(scenario: Scenario, tenants: list[str]) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(7)
    bars: list[dict[str, Any]] = []
    for t_index, tenant in enumerate(tenants):
        for symbol in ("AAPL", "MSFT", "NVDA", "SPY"):
            for minute in range(40):
                bars.append(bar(tenant, symbol, minute, close=100 + t_index * 10 + rng.random()))
        bars.append(bar(tenant, "AAPL", 0, close=1.0, timeframe="1h"))
        bars.append(bar(tenant, "AAPL", 0, close=2.0, timeframe="1d"))
    corrections = [dict(b, volume=b["volume"] + 7, revision=1) for b in rng.sample(bars, 20)]
    stale = [dict(b, close=b["close"] + 50, revision=0) for b in corrections[:5]]  # older revision, late
    quotes = [
        {
            "tenant_id": t,
            "vendor": "polygon",
            "symbol": "MSFT",
            "ts": iso_ts(1_763_650_800 + 60 * 45 + i),
            "bid": 200.0 + i,
            "ask": 200.5 + i,
            "bid_size": 100.0,
            "ask_size": 100.0,
        }
        for t in tenants
        for i in range(5)
    ]
    news = [
        {
            "tenant_id": t,
            "vendor": "newswire",
            "published_at": iso_ts(1_763_650_800 + i),
            "title": f"Headline {i}",
            "url": f"https://n/{i}",
            **({"id": f"n-{i}"} if i % 2 else {}),
        }
        for t in tenants
        for i in range(4)
    ]
    news += news[:2]  # redelivered articles: with and without an id, still one row each
    jobs = [
        {
            "tenant_id": t,
            "idempotency_key": f"job-{i}",
            "job_type": "backfill_bars",
            "payload": json.dumps({"n": i}),
            "requested_at": iso_ts(1_763_650_800),
        }
        for t in tenants
        for i in range(3)
    ]
    jobs += [dict(jobs[0], payload=json.dumps({"n": "repeat"}))]
    stream = {"bars": bars + corrections + stale, "quotes": quotes, "news": news, "jobs": jobs}
    for table, records in stream.items():
        scenario.produce(table, records)
    return stream


def test_mixed_stream_lands_exactly_and_offsets_reach_the_end() -> None:
    scenario = make_scenario(partitions=3, tables=["bars", "quotes", "news", "jobs"])
    tenants = [scenario.add_tenant(n) for n in ("alpha", "beta", "gamma")]
    stream = mixed_stream(scenario, tenants)
    ends = scenario.end_offsets()
    assert sum(ends.values()) == sum(len(v) for v in stream.values())
    with running_sink(scenario.settings) as worker:
        wait_until(lambda: drained(worker, ends), what="every offset committed")
    # Every partition with records is committed at its end; empty ones were never committed.
    assert scenario.committed() == {tp: (o if o > 0 else -1001) for tp, o in ends.items()}
    for tenant in tenants:
        assert scenario.rows(tenant, BAR_QUERY) == expected_bars(stream["bars"], tenant)
        # Latest prices: the newest bar or quote per vendor/symbol, never an older one.
        prices = dict(
            ((v, s), (p, src))
            for v, s, p, src in scenario.rows(tenant, "SELECT vendor, symbol, price, source FROM latest_prices")
        )
        newest_aapl = max(
            (
                b
                for b in stream["bars"]
                if b["tenant_id"] == tenant and b["symbol"] == "AAPL" and b["timeframe"] == "1m"
            ),
            key=lambda b: (b["ts"], b["revision"]),
        )
        assert prices[("polygon", "AAPL")] == (newest_aapl["close"], "bar")
        assert prices[("polygon", "MSFT")] == ((204.0 + 204.5) / 2, "quote")  # quotes are newer than bars
        assert scenario.rows(tenant, "SELECT count(*), count(DISTINCT news_id) FROM news") == [(4, 4)]
        assert scenario.rows(tenant, "SELECT idempotency_key, payload->>'n' FROM jobs ORDER BY 1") == [
            ("job-0", "0"),
            ("job-1", "1"),
            ("job-2", "2"),
        ]
    # The offsets ledger agrees with Kafka: every partition the sink was assigned is claimed (epoch 1,
    # one member, one assignment), at 0 where it never had a record.
    ledger = scenario.rows(
        None,
        "SELECT topic, partition, next_offset, epoch FROM sink_offsets WHERE consumer_group = %s",
        (scenario.settings.kafka.group_id,),
        url=scenario.owner_url,
    )
    assert {(t, p): (o, e) for t, p, o, e in ledger} == {tp: (o, 1) for tp, o in ends.items()}


def snapshot(scenario: Scenario, tenants: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table in ("bars_minute", "bars_hour", "bars_day", "quotes", "news", "jobs", "latest_prices"):
        out[table] = sorted(row for t in tenants for row in scenario.rows(t, f"SELECT * FROM {table}"))
    return out


def test_redelivery_adds_no_row_and_changes_no_value() -> None:
    scenario = make_scenario(partitions=3, tables=["bars", "quotes", "news", "jobs"])
    tenants = [scenario.add_tenant(n) for n in ("alpha", "beta", "gamma")]
    mixed_stream(scenario, tenants)
    ends = scenario.end_offsets()
    with running_sink(scenario.settings) as worker:
        wait_until(lambda: drained(worker, ends), what="first pass committed")
    before = snapshot(scenario, tenants)
    assert reset_group(scenario.settings) == 12
    assert all(o in (0, -1001) for o in scenario.committed().values())
    with running_sink(scenario.settings) as worker:
        wait_until(lambda: drained(worker, ends), what="second pass committed")
    after = snapshot(scenario, tenants)
    assert after == before  # every column, ingested_at included: replayed upserts were no-ops


def test_an_older_revision_arriving_later_changes_nothing() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"])
    tenant = scenario.add_tenant("rev")
    with running_sink(scenario.settings) as worker:
        scenario.produce("bars", [bar(tenant, "IBM", 1, close=10.0, revision=2)])
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), what="revision 2 committed")
        # Older revision in a later flush, then newer and older ones inside one batch.
        scenario.produce("bars", [bar(tenant, "IBM", 1, close=9.0, revision=1)])
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), what="revision 1 committed")
        scenario.produce(
            "bars", [bar(tenant, "IBM", 2, close=20.0, revision=3), bar(tenant, "IBM", 2, close=19.0, revision=2)]
        )
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), what="in-batch pair committed")
    assert scenario.rows(tenant, "SELECT ts, close, revision FROM bars ORDER BY ts") == [
        (ts(bar(tenant, "IBM", 1)["ts"]), 10.0, 2),
        (ts(bar(tenant, "IBM", 2)["ts"]), 20.0, 3),
    ]
    assert scenario.rows(tenant, "SELECT price FROM latest_prices") == [(20.0,)]


def test_two_sink_processes_one_stopped_midstream_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    scenario = make_scenario(partitions=6, tables=["bars"], batching={"max_rows": 200, "max_ms": 100})
    tenants = [scenario.add_tenant(n) for n in ("p1", "p2", "p3")]
    records = [bar(t, f"S{s:03d}", m, close=50.0 + m) for t in tenants for s in range(40) for m in range(60)]
    first = start_sink_process(scenario.settings, tmp_path / "sink-1.log")
    second = start_sink_process(scenario.settings, tmp_path / "sink-2.log")
    try:
        producer = threading.Thread(target=scenario.produce, args=("bars", records))
        producer.start()

        def written() -> int:
            return sum(scenario.rows(t, "SELECT count(*) FROM bars")[0][0] for t in tenants)

        wait_until(lambda: written() > len(records) // 4, what="a quarter of the stream written")
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0, (tmp_path / "sink-1.log").read_text()[-2000:]
        producer.join(timeout=120)
        ends = scenario.end_offsets()
        wait_until(
            lambda: all(scenario.committed()[tp] == o for tp, o in ends.items() if o > 0),
            timeout_s=120,
            what="the survivor committed everything",
        )
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    assert second.returncode == 0, (tmp_path / "sink-2.log").read_text()[-2000:]
    for tenant in tenants:
        assert scenario.rows(tenant, "SELECT count(*), count(DISTINCT (symbol, ts)) FROM bars") == [(2400, 2400)]
        assert scenario.rows(tenant, "SELECT count(*) FROM bars WHERE close <> 50.0 + extract(minute FROM ts)") == [
            (0,)
        ]


@pytest.mark.parametrize("protocol", ["auto", "classic"])
def test_two_sinks_in_one_group_each_get_an_equal_share_of_every_topic(protocol: str) -> None:
    # With cooperative-sticky one sink could hold every bars partition and the other every quotes
    # partition: balanced in count, not in load. The defaults deal each topic out in turn: the broker's
    # range assignor under the consumer protocol (which this broker offers), roundrobin under classic.
    scenario = make_scenario(partitions=4, tables=["bars", "quotes"], kafka={"group_protocol": protocol})
    with running_sink(scenario.settings) as first, running_sink(scenario.settings) as second:

        def shares() -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
            return set(first.state.assignment), set(second.state.assignment)

        wait_until(
            lambda: [len(s) for s in shares()] == [4, 4] and not set.intersection(*shares()),
            what="the two sinks holding four of the eight partitions each",
        )
        assert {first.protocol, second.protocol} == {"consumer" if protocol == "auto" else "classic"}
        for share in shares():
            assert Counter(topic for topic, _ in share) == {scenario.topic("bars"): 2, scenario.topic("quotes"): 2}


def test_tenant_isolation_under_load_through_a_small_pool() -> None:
    scenario = make_scenario(
        partitions=3,
        tables=["bars"],
        database={"pool_max_size": 1, "pool_min_size": 1},
        batching={"max_rows": 25, "max_ms": 50},
    )
    tenants = [scenario.add_tenant(f"iso{i}") for i in range(4)]
    # Alternating tenants, each record carrying its tenant's index in the symbol.
    records = [bar(tenants[i % 4], f"T{i % 4}X{i // 4 % 50}", i // 200) for i in range(4000)]
    scenario.produce("bars", records)
    ends = scenario.end_offsets()
    with running_sink(scenario.settings) as worker:
        wait_until(lambda: drained(worker, ends), what="every offset committed")
        with worker.pool.connection() as conn:
            assert conn.execute("SELECT coalesce(current_setting('app.tenant_id', true), '')").fetchone() == ("",)
    for i, tenant in enumerate(tenants):
        rows = scenario.rows(tenant, "SELECT symbol, count(*) FROM bars GROUP BY symbol")
        assert sum(n for _, n in rows) == 1000
        assert {symbol[:2] for symbol, _ in rows} == {f"T{i}"}  # zero rows under a wrong tenant
    with psycopg.connect(scenario.owner_url) as conn:
        # The owner is under forced RLS too: without a context it sees nothing.
        assert conn.execute("SELECT count(*) FROM bars_minute").fetchone() == (0,)


def test_a_job_request_that_reuses_a_stored_key_for_another_job_is_dead_lettered() -> None:
    scenario = make_scenario(partitions=1, tables=["jobs"])
    tenant = scenario.add_tenant("jobs")

    def job(key: str, n: int) -> dict[str, Any]:
        return {
            "tenant_id": tenant,
            "idempotency_key": key,
            "job_type": "backfill_bars",
            "payload": json.dumps({"n": n}),
            "requested_at": iso_ts(1_763_650_800),
        }

    with running_sink(scenario.settings) as worker:
        scenario.produce("jobs", [job("k1", 1)])
        wait_until(lambda: drained(worker, scenario.end_offsets()), what="the first request committed")
        # In a later batch: another job under the stored key k1, a new key, and the first request again.
        scenario.produce("jobs", [job("k2", 1), job("k1", 2)])
        wait_until(lambda: drained(worker, scenario.end_offsets()), what="the later requests committed")
        scenario.produce("jobs", [job("k1", 1)])
        wait_until(lambda: drained(worker, scenario.end_offsets()), what="the later requests committed")
    assert scenario.rows(tenant, "SELECT idempotency_key, payload->>'n' FROM jobs ORDER BY 1") == [
        ("k1", "1"),
        ("k2", "1"),
    ]
    (letter,) = scenario.dead_letters("jobs", expect=1)
    headers = dict(letter.headers() or [])
    assert (headers["mds.dlq.source.offset"], headers["mds.dlq.stage"], headers["mds.dlq.reason"]) == (
        b"2",  # k1 with n=2
        b"write",
        b"job_key_conflict",
    )
    assert headers["mds.dlq.message"] == (
        b"idempotency key 'k1' already names another job in the database (job_type, payload or priority differs)"
    )
