"""Ownership across rebalances, against an in-memory consumer: claims and epochs, resuming from the
ledger, a broker or database that does not answer in the callback, revoke drains, lost partitions."""

from __future__ import annotations

from mds_sink.sink.pipeline import Settled
from tests.unit.sink.fakes import OFFSET_INVALID, FakeConsumer, FakeLedger, buffer, units

B0, B1 = ("bars", 0), ("bars", 1)


def test_an_assignment_claims_a_new_epoch_and_starts_where_kafka_left_off() -> None:
    consumer = FakeConsumer()
    consumer.group_offsets = {B0: 5}
    u = units(consumer=consumer, ledger=FakeLedger({B0: 5}))
    u.consumer.group_assigns([B0, B1])
    # The ledger agrees with Kafka (or has nothing): the client starts from the group's offsets.
    assert consumer.assigned == [{B0: OFFSET_INVALID, B1: OFFSET_INVALID}]
    assert consumer.positions == {B0: 5, B1: 0}
    assert consumer.commits == []
    assert u.ownership.epochs == {B0: 1, B1: 1}
    assert u.flusher.owned == {B0: 1, B1: 1}
    assert u.commits.committed == {B0: 5}
    assert consumer.paused == set()
    assert u.state.joined


def test_an_assignment_resumes_from_the_ledger_when_it_is_ahead_of_kafka() -> None:
    consumer = FakeConsumer()
    consumer.group_offsets = {B0: 5}
    u = units(consumer=consumer, ledger=FakeLedger({B0: 9, B1: 3}))
    u.consumer.group_assigns([B0, B1])
    # Rows up to 9 (and 3) are in the database: the partitions start there, and Kafka is told at once.
    assert consumer.assigned == [{B0: 9, B1: 3}]
    assert consumer.commits == [{B0: 9, B1: 3}]
    assert u.commits.committed == {B0: 9, B1: 3}
    assert consumer.seeks == []


def test_a_broker_that_does_not_answer_committed_offsets_leaves_the_ledger_to_say_where_to_resume() -> None:
    consumer = FakeConsumer()
    consumer.group_offsets = {B0: 4, B1: 2}
    consumer.coordinator_away = True
    u = units(consumer=consumer, ledger=FakeLedger({B0: 4}))
    u.consumer.group_assigns([B0, B1])
    # B0: the ledger's offset, committed again; B1: nothing in the ledger, the client's own position.
    assert consumer.assigned == [{B0: 4, B1: OFFSET_INVALID}]
    assert consumer.commits == [{B0: 4}]
    assert u.commits.committed == {B0: 4}
    assert u.ownership.unclaimed == set()


def test_a_database_away_at_assignment_leaves_the_partition_unclaimed_and_paused_until_claimed() -> None:
    consumer = FakeConsumer({B0: [b"r"] * 10})
    consumer.group_offsets = {B0: 3}
    ledger = FakeLedger({B0: 7})
    ledger.down = True
    u = units(consumer=consumer, ledger=ledger)
    u.consumer.group_assigns([B0, B1])
    assert ledger.calls == 2 and u.sleeps == [1.0]  # tried twice in the callback, then left for later
    assert u.ownership.assignment == {B0, B1}
    assert u.ownership.unclaimed == {B0, B1}
    assert u.ownership.epochs == {} and u.flusher.owned == {}
    assert consumer.paused == {B0, B1}
    assert consumer.consume(100) == []  # nothing is read that could not be written

    u.rebalance.claim_pending(now=0.5)  # within a second of the last try: not yet
    assert ledger.calls == 2
    u.rebalance.claim_pending(now=10.0)  # still away
    assert ledger.calls == 3 and u.ownership.unclaimed == {B0, B1}

    ledger.down = False
    u.rebalance.claim_pending(now=10.5)
    assert ledger.calls == 3  # at most once a second
    u.rebalance.claim_pending(now=11.0)
    # Claimed now; B0's rows end at 7 while Kafka has 3: seek there (nothing was read) and commit it.
    assert u.ownership.unclaimed == set()
    assert u.ownership.epochs == {B0: 1, B1: 1} and u.flusher.owned == {B0: 1, B1: 1}
    assert consumer.seeks == [(B0, 7)]
    assert consumer.commits == [{B0: 7}]
    assert consumer.paused == set()
    assert [m.offset() for m in consumer.consume(100)] == [7, 8, 9]


def test_a_revoked_partition_is_drained_committed_and_given_up() -> None:
    u = units()
    u.consumer.group_assigns([B0, B1])
    buffer(u.batcher, B0, range(5))
    buffer(u.batcher, B1, range(2))
    u.consumer.group_revokes([B0])
    # Its table's batch was flushed under the epochs it was read in, and committed, before it went.
    (drained,) = u.flusher.submitted
    assert drained.fence == {B0: 1, B1: 1}
    assert u.consumer.commits == [{B0: 5, B1: 2}]
    assert u.ownership.assignment == {B1}
    assert u.commits.committed == {B1: 2}
    assert u.flusher.owned == {B1: 1}
    assert u.batcher.buffered == 0
    assert u.state.revocations == 1


def test_a_revocation_after_a_failed_flush_drains_nothing() -> None:
    u = units()
    u.consumer.group_assigns([B0])
    u.commits.settling = False  # a flush failed: nothing may commit any more
    buffer(u.batcher, B0, range(3))
    u.consumer.group_revokes([B0])
    assert u.flusher.submitted == [] and u.consumer.commits == []
    assert u.batcher.buffered == 0 and u.ownership.assignment == set()


def test_lost_partitions_commit_nothing_drop_their_buffer_and_release_their_client_pause() -> None:
    u = units()
    u.consumer.group_assigns([B0, B1])
    buffer(u.batcher, B0, range(3))
    buffer(u.batcher, B1, range(2))
    u.commits.submit_due(0.0, force=["bars"])  # in flight when the partition is lost
    buffer(u.batcher, B0, range(3, 6))
    buffer(u.batcher, B1, range(2, 4))
    u.pauses.pause_by_operator("bars", 0)
    assert u.consumer.paused == {B0}

    u.consumer.group_loses([B0])
    assert u.consumer.commits == []
    assert u.batcher.buffered == 2  # B1's two records; B0's three dropped
    assert u.consumer.paused == set()  # the client would keep the pause were it assigned here again
    assert u.pauses.operator == {B0}  # the operator's pause is kept, to be applied again
    assert u.ownership.assignment == {B1} and u.ownership.lost == {B0}
    assert u.flusher.owned == {B1: 1}
    assert u.state.revocations == 1

    # The flush in flight settles late: only the partition still owned is committed.
    u.commits.handle_done(u.flusher.collect())
    assert u.consumer.commits == [{B1: 2}]
    assert u.commits.committed == {B1: 2}


def test_a_lost_partition_assigned_again_commits_again() -> None:
    u = units()
    u.consumer.group_assigns([B0])
    u.consumer.group_loses([B0])
    u.commits.handle_done([Settled("bars", 1, [], {B0: 4})])
    assert u.consumer.commits == []
    u.consumer.group_assigns([B0])
    assert u.ownership.lost == set() and u.ownership.epochs == {B0: 2}
    u.commits.handle_done([Settled("bars", 1, [], {B0: 6})])
    assert u.consumer.commits == [{B0: 6}]


def test_an_operator_pause_held_across_revoke_and_assign_is_applied_again() -> None:
    u = units()
    u.consumer.group_assigns([B0, B1])
    u.pauses.pause_by_operator("bars", 0)
    assert u.consumer.paused == {B0}
    u.consumer.group_revokes([B0, B1])
    assert u.consumer.paused == set() and u.pauses.client_paused == set()
    assert u.pauses.operator == {B0}
    u.consumer.group_assigns([B1])
    assert u.consumer.paused == set()
    u.consumer.group_assigns([B0])
    assert u.consumer.paused == {B0}
    assert u.pauses.client_paused == {B0}
    u.pauses.resume_by_operator("bars", None)
    assert u.consumer.paused == set() and u.pauses.operator == set()


def test_an_eager_assignment_replaces_the_whole_assignment() -> None:
    u = units(cooperative=False)
    u.consumer.group_assigns([B0])
    u.consumer.group_revokes([B0])
    u.consumer.group_assigns([B1])
    assert u.consumer.assigned == [{B0: OFFSET_INVALID}, {B1: OFFSET_INVALID}]
    assert u.consumer.positions == {B1: 0}
    assert u.ownership.assignment == {B1}
