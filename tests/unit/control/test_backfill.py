"""The pure part of time-range backfill: offsets from the broker's answers, retention, pacing, tenants."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from mds_sink.control.backfill import (
    PartitionRange,
    PartitionTimes,
    RateLimit,
    TimeRange,
    empty,
    eta_s,
    keep_tenant,
    lock_key,
    plan,
    tenant_id,
    unfinished,
)
from mds_sink.core.batcher import DeadLetter, Source, TableBatch
from mds_sink.core.catalog import TABLES
from mds_sink.core.rejection import Rejection
from mds_sink.errors import QueryError

FROM = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TO = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
WINDOW = TimeRange.of(FROM, TO)


def times(
    partition: int, low: int, high: int, first_ms: int | None, start: int | None, end: int | None
) -> PartitionTimes:
    return PartitionTimes("bars", partition, low, high, first_ms, start, end)


def test_the_range_is_the_offsets_from_the_time_index_and_ends_at_the_high_watermark_when_open() -> None:
    found = [
        times(1, 0, 100, 0, 40, 70),  # both ends in the log
        times(0, 0, 50, 0, 10, None),  # nothing at or after `to` yet: up to the end as planned
        times(2, 0, 30, 0, None, None),  # nothing at or after `from`: empty
    ]
    assert plan(found, WINDOW) == [
        PartitionRange("bars", 0, 10, 50, 10),
        PartitionRange("bars", 1, 40, 70, 40),
        PartitionRange("bars", 2, 30, 30, 30),
    ]
    assert not empty(plan(found, WINDOW))
    assert empty(plan([times(0, 0, 30, 0, None, None)], WINDOW))


def test_a_range_starting_before_what_retention_kept_is_refused_naming_the_earliest_time_left() -> None:
    kept_from = WINDOW.start_ms + 90_000
    found = [times(0, 5, 50, kept_from, 5, None), times(1, 3, 50, WINDOW.start_ms + 1_000, 3, None)]
    with pytest.raises(QueryError) as refused:
        plan(found, WINDOW)
    assert str(refused.value) == (
        "--from 2026-12-01T09:00:00.000Z is older than the retention of bars[0], bars[1]: records of the range "
        "were deleted; the earliest time still available is 2026-12-01T09:01:30.000Z"
    )
    # A log never truncated (low 0), or truncated only before the range: fine.
    assert plan([times(0, 0, 50, kept_from, 0, None), times(1, 3, 50, WINDOW.start_ms, 3, None)], WINDOW)


def test_a_resumed_job_reads_only_what_is_left_and_the_window_is_checked() -> None:
    ranges = [PartitionRange("bars", 0, 0, 10, 10), PartitionRange("bars", 1, 0, 10, 4)]
    assert unfinished(ranges) == [ranges[1]] and ranges[1].remaining == 6
    with pytest.raises(QueryError, match="must be after"):
        TimeRange.of(TO, FROM)
    assert WINDOW.holds(WINDOW.start_ms) and not WINDOW.holds(WINDOW.end_ms)


def test_the_rate_limit_paces_without_making_up_for_a_stall() -> None:
    limit = RateLimit(100, now=0.0)
    assert limit.wait_s(50, now=0.0) == pytest.approx(0.5)
    assert limit.wait_s(50, now=0.5) == pytest.approx(0.5)
    assert limit.wait_s(10, now=30.0) == pytest.approx(0.1)  # after a 29 s stall: no burst allowed
    assert RateLimit(None, now=0.0).wait_s(10_000, now=0.0) == 0.0
    assert eta_s(0, 100, 5.0) is None and eta_s(25, 100, 5.0) == pytest.approx(15.0)


def test_a_tenant_filter_keeps_that_tenant_only_and_counts_what_it_dropped() -> None:
    spec = TABLES["quotes"]
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    batch = TableBatch(spec, 0)
    width = len(spec.columns)
    for i, tenant in enumerate([mine, theirs, theirs]):
        row: list[object] = [0] * width
        row[spec.tenant_index] = tenant
        row[spec.column_names.index("symbol")] = f"S{i}"
        batch.add(tuple(row), Source("q", 0, i), 10)
    bad = Rejection("validate", "x", "y")
    batch.reject(Source("q", 0, 3), bad, 10)
    batch.reject(Source("q", 0, 4), bad, 10)
    owner = {3: mine, 4: None}
    dropped = keep_tenant(batch, mine, lambda d: owner[d.source.offset])
    assert dropped == 3
    assert [row[spec.tenant_index] for row, _ in batch.rows.values()] == [mine]
    assert batch.dead_letters == [DeadLetter(Source("q", 0, 3), bad)]
    assert tenant_id(mine.upper()) == mine
    with pytest.raises(QueryError, match="not a tenant id"):
        tenant_id("acme")


def test_lock_keys_are_two_signed_int4_from_the_job_id() -> None:
    job = uuid.UUID("ffffffff-0000-0001-8000-000000000000")
    assert lock_key(job) == (-1, 1)
    assert all(-(2**31) <= k < 2**31 for k in lock_key(uuid.uuid4()))
