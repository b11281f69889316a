"""Bad input never stops good input: every poison record becomes exactly one dead letter, with its reason."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from mds_sink.avro.codec import frame
from tests.support import (
    Scenario,
    bar,
    drained,
    iso_ts,
    make_scenario,
    read_topic,
    running_sink,
    wait_until,
)

FUTURE = iso_ts(4_000_000_000)  # year 2096


def corpus(scenario: Scenario, tenant: str, inactive: str) -> dict[str, list[tuple[bytes, bytes | None, str, str]]]:
    """Per table: (key, value, expected stage, expected reason) of each bad record."""
    bars = scenario.encoder("bars")
    good = bars.encode(bar(tenant, "GOOD", 0))
    quote = scenario.encoder("quotes").encode(
        {
            "tenant_id": tenant,
            "vendor": "v",
            "symbol": "Q",
            "ts": FUTURE[:4] and iso_ts(1_763_650_800),
            "bid": 1.0,
            "ask": 1.0,
            "bid_size": 1.0,
            "ask_size": 1.0,
        }
    )

    def b(**changes: Any) -> bytes:
        return bars.encode({**bar(tenant, "BAD", 99), **changes})

    bad_bars = [
        (b"\x01" + good[1:], "decode", "bad_magic"),
        (b"\x00\x00\x01", "decode", "truncated"),
        (frame(999_999, good[5:]), "decode", "unknown_schema"),
        (good + b"\xff\xff", "decode", "corrupt_avro"),
        (quote, "decode", "schema_mismatch"),
        (None, "decode", "null_value"),
        (b"", "decode", "empty_value"),
        (b(tenant_id=str(uuid.uuid4())), "validate", "unknown_tenant"),
        (b(tenant_id=inactive), "validate", "inactive_tenant"),
        (b(tenant_id="not-a-uuid"), "validate", "bad_tenant_id"),
        (b(high=1.0), "validate", "ohlc_inconsistent"),
        (b(ts=FUTURE), "validate", "ts_in_future"),
        (b(timeframe="7m"), "validate", "bad_timeframe"),
        (b(close=math.nan), "validate", "bad_price"),
    ]
    jobs = scenario.encoder("jobs")
    job = {"tenant_id": tenant, "idempotency_key": "k", "job_type": "backfill", "requested_at": iso_ts(1_763_650_800)}
    news = scenario.encoder("news")
    article = {"tenant_id": tenant, "vendor": "wire", "published_at": iso_ts(1_763_650_800), "title": "ok"}
    options = scenario.encoder("option_snapshots")
    option = {
        "tenant_id": tenant,
        "vendor": "opra",
        "underlying": "SPY",
        "expiry": "2026-12-18",
        "option_type": "C",
        "strike": 500.0,
        "ts": iso_ts(1_763_650_800),
    }
    return {
        "bars": [(f"bad-{i}".encode(), v, stage, reason) for i, (v, stage, reason) in enumerate(bad_bars)],
        # The database refuses these three: the batch is split until each stands alone.
        "jobs": [
            (
                b"bad-jsonb",
                jobs.encode({**job, "payload": json.dumps({"a": "\u0000"})}),
                "write",
                "db_untranslatable_character",
            ),
            (
                b"bad-infinity",
                jobs.encode({**job, "idempotency_key": "k2", "payload": '{"a": 1e999}'}),
                "write",
                "db_invalid_text",
            ),
        ],
        "news": [
            (b"bad-nul", news.encode({**article, "title": "nul\x00here"}), "write", "db_data_error"),
            (b"bad-sentiment", news.encode({**article, "sentiment_score": 1.5}), "validate", "bad_sentiment"),
        ],
        "option_snapshots": [
            (b"bad-expiry", options.encode({**option, "expiry": 2_000_000_000}), "validate", "expiry_too_far"),
            (b"bad-type", options.encode({**option, "option_type": "X"}), "validate", "bad_option_type"),
        ],
    }


def goods(scenario: Scenario, tenant: str, table: str, n: int) -> list[tuple[bytes, bytes]]:
    encoder = scenario.encoder(table)
    records: list[dict[str, Any]] = []
    for i in range(n):
        at = iso_ts(1_763_650_800 + i)
        records.append(
            {
                "bars": bar(tenant, f"G{i % 7}", i),
                "jobs": {
                    "tenant_id": tenant,
                    "idempotency_key": f"good-{i}",
                    "job_type": "backfill",
                    "requested_at": at,
                },
                "news": {
                    "tenant_id": tenant,
                    "vendor": "wire",
                    "published_at": at,
                    "title": f"good {i}",
                    "id": f"g{i}",
                },
                "option_snapshots": {
                    "tenant_id": tenant,
                    "vendor": "opra",
                    "underlying": "SPY",
                    "expiry": "2026-12-18",
                    "option_type": "P",
                    "strike": 400.0 + i,
                    "ts": at,
                },
            }[table]
        )
    return [(f"good-{i}".encode(), encoder.encode(r)) for i, r in enumerate(records)]


def test_poison_corpus_is_dead_lettered_exactly_and_good_records_land() -> None:
    tables = ["bars", "jobs", "news", "option_snapshots"]
    scenario = make_scenario(partitions=2, tables=tables, batching={"max_rows": 40, "max_ms": 100})
    tenant = scenario.add_tenant("poison")
    inactive = scenario.add_tenant("sleeping", active=False)
    bad = corpus(scenario, tenant, inactive)
    good_counts = {"bars": 120, "jobs": 30, "news": 30, "option_snapshots": 30}
    for table in tables:
        good = goods(scenario, tenant, table, good_counts[table])
        # Interleaved: each bad record once, spread evenly between the good ones.
        mixed: list[tuple[bytes | None, bytes | None]] = list(good)
        for j, (key, value, _, _) in reversed(list(enumerate(bad[table]))):
            mixed.insert((j + 1) * len(good) // (len(bad[table]) + 1), (key, value))
        scenario.produce_values(table, mixed)
    expected_bad = {k: (table, stage, reason) for table in tables for k, _, stage, reason in bad[table]}
    assert len({reason for _, _, reason in expected_bad.values()}) >= 12
    ends = scenario.end_offsets()
    with running_sink(scenario.settings) as worker:
        wait_until(lambda: drained(worker, ends), what="every offset committed")
    assert scenario.committed() == {tp: (o if o > 0 else -1001) for tp, o in ends.items()}

    # Where each original landed in its topic, to check the dead letters' coordinates.
    originals = {table: read_topic(scenario.settings, scenario.topic(table)) for table in tables}
    origin = {(table, m.key()): (m.partition(), m.offset(), m.value()) for table in tables for m in originals[table]}
    seen: dict[bytes, tuple[str, str, str]] = {}
    for table in tables:
        letters = scenario.dead_letters(table, expect=len(bad[table]))
        for m in letters:
            h = {n: v.decode() for n, v in m.headers()}
            key = m.key()
            assert key not in seen, f"{key!r} dead-lettered twice"
            seen[key] = (table, h["mds.dlq.stage"], h["mds.dlq.reason"])
            partition, offset, value = origin[(table, key)]
            assert (h["mds.dlq.source.topic"], int(h["mds.dlq.source.partition"]), int(h["mds.dlq.source.offset"])) == (
                scenario.topic(table),
                partition,
                offset,
            )
            assert h["mds.dlq.error.class"] == "poison"
            assert h["mds.dlq.group"] == scenario.settings.kafka.group_id
            assert h["mds.dlq.replay.count"] == "0"
            assert h["mds.dlq.message"]
            assert m.value() == value  # the original value, byte for byte
    assert seen == expected_bad

    assert scenario.rows(tenant, "SELECT count(*) FROM bars") == [(120,)]
    assert scenario.rows(tenant, "SELECT count(*) FROM jobs") == [(30,)]
    assert scenario.rows(tenant, "SELECT count(*) FROM news") == [(30,)]
    assert scenario.rows(tenant, "SELECT count(*) FROM option_snapshots") == [(30,)]
    assert scenario.rows(inactive, "SELECT count(*) FROM bars") == [(0,)]
