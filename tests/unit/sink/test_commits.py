"""Commits after settlement, against an in-memory consumer: in order, only for partitions owned,
retried when Kafka refuses, and never behind a flush that failed."""

from __future__ import annotations

import pytest

from mds_sink.errors import SinkFailed
from mds_sink.sink.pipeline import Settled
from tests.unit.sink.fakes import buffer, units

B0, B1 = ("bars", 0), ("bars", 1)


def test_settled_batches_are_committed_in_order() -> None:
    u = units()
    u.consumer.group_assigns([B0, B1])
    u.commits.handle_done([Settled("bars", 2, [], {B0: 3}), Settled("bars", 2, [], {B0: 5, B1: 1})])
    assert u.consumer.commits == [{B0: 3}, {B0: 5, B1: 1}]
    assert u.commits.committed == {B0: 5, B1: 1}


def test_a_batch_is_submitted_fenced_on_the_epochs_its_records_were_read_under() -> None:
    u = units()
    u.consumer.group_assigns([B0])
    u.consumer.group_revokes([B0])
    u.consumer.group_assigns([B0, B1])  # B0 claimed again: epoch 2
    buffer(u.batcher, B0, range(2))
    buffer(u.batcher, B1, range(1))
    u.commits.submit_due(0.0, force=["bars"])
    (batch,) = u.flusher.submitted
    assert batch.fence == {B0: 2, B1: 1}
    u.commits.handle_done(u.flusher.collect())
    assert u.consumer.commits == [{B0: 2, B1: 1}]


def test_a_failed_kafka_commit_is_retried_and_dropped_for_partitions_no_longer_owned() -> None:
    u = units()
    u.consumer.group_assigns([B0, B1])
    u.consumer.failing_commits = 1
    u.commits.handle_done([Settled("bars", 4, [], {B0: 5, B1: 3})])
    assert u.consumer.commits == [] and u.commits.committed == {}

    u.commits.retry(now=0.5)  # at most once a second
    assert u.consumer.commits == []
    u.consumer.group_revokes([B1])  # nothing buffered: no drain, B1 given up
    u.commits.retry(now=2.0)
    assert u.consumer.commits == [{B0: 5}]
    assert u.commits.committed == {B0: 5}
    u.commits.retry(now=4.0)  # nothing left to retry
    assert u.consumer.commits == [{B0: 5}]


def test_a_failed_commit_retried_while_it_still_fails_is_kept_for_the_next_try() -> None:
    u = units()
    u.consumer.group_assigns([B0])
    u.consumer.failing_commits = 2
    u.commits.handle_done([Settled("bars", 1, [], {B0: 2})])
    u.commits.retry(now=1.0)
    assert u.consumer.commits == []
    u.commits.retry(now=2.0)
    assert u.consumer.commits == [{B0: 2}]


def test_a_newer_commit_supersedes_an_older_failed_one() -> None:
    u = units()
    u.consumer.group_assigns([B0])
    u.consumer.failing_commits = 1
    u.commits.handle_done([Settled("bars", 1, [], {B0: 2})])
    u.commits.handle_done([Settled("bars", 1, [], {B0: 4})])
    u.commits.retry(now=5.0)
    assert u.consumer.commits == [{B0: 4}]  # 2 is never committed after 4


def test_after_a_failed_flush_nothing_behind_it_is_committed_and_the_sink_fails() -> None:
    u = units(max_rows=2)
    u.consumer.group_assigns([B0])
    for first in (0, 2, 4):
        buffer(u.batcher, B0, range(first, first + 2))
        u.commits.submit_due(0.0)  # full: due now
    u.flusher.fail_at = {1}
    with pytest.raises(SinkFailed, match="flush of bars failed: server closed the connection"):
        u.commits.handle_done(u.flusher.collect())
    assert u.consumer.commits == [{B0: 2}]
    assert not u.commits.settling
    # The revocation on the way out commits and drains nothing more.
    buffer(u.batcher, B0, range(6, 8))
    u.consumer.close()
    assert u.consumer.commits == [{B0: 2}]
    assert len(u.flusher.submitted) == 3


def test_drain_flushes_the_tables_and_waits_for_everything_before_them() -> None:
    u = units()
    u.consumer.group_assigns([B0])
    buffer(u.batcher, B0, range(3))
    u.commits.submit_due(0.0, force=["bars"])
    buffer(u.batcher, B0, range(3, 5))
    assert u.commits.drain(["bars"], deadline_s=30.0)
    assert u.consumer.commits == [{B0: 3}, {B0: 5}]
    assert u.batcher.buffered == 0 and u.flusher.pending == 0
