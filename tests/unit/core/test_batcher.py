from __future__ import annotations

from mds_sink.core.batcher import Batcher, Source
from mds_sink.core.rejection import Rejection
from mds_sink.core.tables import BARS, JOBS, NEWS

TENANT = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"


def bar_row(ts: int, close: float, revision: int = 0) -> tuple[object, ...]:
    return (ts, TENANT, "polygon", "AAPL", "1m", 1.0, 2.0, 0.5, close, 10.0, None, None, revision)


def src(offset: int, partition: int = 0, topic: str = "bars") -> Source:
    return Source(topic, partition, offset)


def test_flush_triggers_rows_ms_and_bytes() -> None:
    b = Batcher(max_rows=3, max_ms=100, max_bytes=1000)
    batch = b.batch(BARS, now_ms=0)
    batch.add(bar_row(1, 1.0), src(0), 10)
    batch.add(bar_row(2, 1.0), src(1), 10)
    assert b.due(now_ms=99) == []
    assert b.due(now_ms=100) == ["bars"]  # max_ms since the first record
    batch.add(bar_row(3, 1.0), src(2), 10)
    assert b.due(now_ms=1) == ["bars"]  # max_rows
    big = Batcher(max_rows=100, max_ms=100, max_bytes=1000).batch(NEWS, now_ms=0)
    assert big.bytes == 0
    b2 = Batcher(max_rows=100, max_ms=100, max_bytes=1000)
    b2.batch(BARS, now_ms=0).add(bar_row(1, 1.0), src(0), 1000)
    assert b2.due(now_ms=1) == ["bars"]  # max_bytes


def test_max_ms_is_the_budget_of_a_record_until_its_row_is_committed() -> None:
    """A batch is due early by the time its write takes (learnt from the writes before it), so that its
    oldest record is committed within max_ms, not max_ms plus the write."""
    b = Batcher(max_rows=1000, max_ms=500, max_bytes=1 << 20)
    b.batch(BARS, now_ms=0).add(bar_row(1, 1.0), src(0), 10)
    assert b.next_deadline_ms() == 500
    for _ in range(50):  # writes of 80 ms, as they come
        b.wrote(0.080)
    assert 79 <= b.lead_ms <= 80
    assert b.due(now_ms=419) == []
    assert b.due(now_ms=421) == ["bars"]
    assert 420 <= (b.next_deadline_ms() or 0) <= 421
    # One slow write moves it a little; a database slow for good never makes it more than half the budget.
    b.wrote(2.0)
    assert 80 < b.lead_ms < 500 / 2
    for _ in range(50):
        b.wrote(5.0)
    assert 249.9 < b.lead_ms <= 250


def test_latest_offset_wins_within_a_batch() -> None:
    batch = Batcher(10, 100, 10_000).batch(BARS, now_ms=0)
    batch.add(bar_row(1, 1.0), src(5), 10)
    batch.add(bar_row(1, 2.0), src(6), 10)
    assert [row[8] for row, _ in batch.rows.values()] == [2.0]
    assert batch.records == 2
    assert batch.next_offsets == {("bars", 0): 7}


def test_a_lower_revision_never_replaces_a_higher_one_in_a_batch() -> None:
    batch = Batcher(10, 100, 10_000).batch(BARS, now_ms=0)
    batch.add(bar_row(1, 2.0, revision=2), src(5), 10)
    batch.add(bar_row(1, 1.0, revision=1), src(6), 10)
    ((row, source),) = batch.rows.values()
    assert (row[8], row[12], source.offset) == (2.0, 2, 5)
    assert batch.next_offsets == {("bars", 0): 7}  # the ignored record is still settled by this batch


def test_outbox_keeps_the_first_request_for_a_key_and_a_conflicting_one_is_dead_lettered() -> None:
    batch = Batcher(10, 100, 10_000).batch(JOBS, now_ms=0)
    first = (TENANT, "k1", "backfill", '{"a":1}', 0, 1, None)
    batch.add(first, src(1, topic="jobs"), 10)
    batch.add((TENANT, "k1", "backfill", '{"a":1}', 0, 2, "retry"), src(2, topic="jobs"), 10)  # the same job again
    batch.add((TENANT, "k1", "backfill", '{"a":2}', 0, 3, None), src(3, topic="jobs"), 10)  # another payload
    batch.add((TENANT, "k1", "other", '{"a":1}', 9, 4, None), src(4, topic="jobs"), 10)  # another job
    assert [row for row, _ in batch.rows.values()] == [first]
    assert [(d.source.offset, d.rejection.stage, d.rejection.code) for d in batch.dead_letters] == [
        (3, "validate", "job_key_conflict"),
        (4, "validate", "job_key_conflict"),
    ]
    assert batch.dead_letters[0].rejection.message == (
        "idempotency key 'k1' already requests another job in this batch (payload differs)"
    )
    assert batch.next_offsets == {("jobs", 0): 5}


def test_rejected_records_move_offsets_and_are_kept() -> None:
    batch = Batcher(10, 100, 10_000).batch(BARS, now_ms=0)
    batch.add(bar_row(1, 1.0), src(3, partition=1), 10)
    batch.reject(src(4, partition=1), Rejection("decode", "bad_magic", "magic byte is 1"), 10)
    assert batch.next_offsets == {("bars", 1): 5}
    assert [(d.source.offset, d.rejection.code) for d in batch.dead_letters] == [(4, "bad_magic")]


def test_dropping_lost_partitions_keeps_the_others() -> None:
    b = Batcher(10, 100, 10_000)
    batch = b.batch(BARS, now_ms=0)
    batch.add(bar_row(1, 1.0), src(3, partition=0), 10)
    batch.add(bar_row(2, 1.0), src(8, partition=1), 10)
    batch.reject(src(9, partition=1), Rejection("validate", "bad_price", "x"), 10)
    assert b.tables_with([("bars", 1)]) == ["bars"]
    assert b.drop([("bars", 1)]) == 2
    kept = b.batches["bars"]
    assert kept.next_offsets == {("bars", 0): 4}
    assert [s.offset for _, s in kept.rows.values()] == [3]
    assert kept.dead_letters == []
    assert b.drop([("bars", 0)]) == 1
    assert b.batches == {}
