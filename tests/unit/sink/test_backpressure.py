"""What is paused and why, against an in-memory consumer: backpressure, an operator's pauses and
unclaimed partitions never undo each other."""

from __future__ import annotations

from tests.unit.sink.fakes import FakeConsumer, buffer, units

B0, B1 = ("bars", 0), ("bars", 1)


def test_a_full_buffer_pauses_every_assigned_partition_until_it_drains() -> None:
    consumer = FakeConsumer({B0: [b"r"] * 3, B1: [b"r"] * 3})
    u = units(consumer=consumer, max_buffered=4)
    consumer.group_assigns([B0, B1])
    buffer(u.batcher, B0, range(4))
    u.pauses.check()
    assert consumer.paused == {B0, B1} and u.pauses.backpressure
    assert consumer.consume(100) == []
    u.commits.submit_due(0.0, force=["bars"])
    u.pauses.check()
    assert consumer.paused == set() and not u.pauses.backpressure
    assert len(consumer.consume(100)) == 6


def test_a_full_batch_the_flusher_has_no_room_for_is_backpressure_too() -> None:
    u = units(max_rows=2)
    u.consumer.group_assigns([B0])
    buffer(u.batcher, B0, range(2))
    u.flusher.room = False
    assert u.pauses.blocked()
    u.pauses.check()
    assert u.consumer.paused == {B0}
    u.flusher.room = True
    u.pauses.check()
    assert u.consumer.paused == set()


def test_backpressure_ending_does_not_resume_a_partition_an_operator_paused() -> None:
    u = units(max_buffered=2)
    u.consumer.group_assigns([B0, B1])
    u.pauses.pause_by_operator("bars", 0)
    buffer(u.batcher, B1, range(2))
    u.pauses.check()
    assert u.consumer.paused == {B0, B1}
    u.batcher.drop([B1])
    u.pauses.check()
    assert u.consumer.paused == {B0}
    assert u.pauses.client_paused == {B0} and u.pauses.operator == {B0}


def test_an_operator_resume_under_backpressure_keeps_the_partition_paused_until_the_buffer_drains() -> None:
    u = units(max_buffered=2)
    u.consumer.group_assigns([B0, B1])
    u.pauses.pause_by_operator("bars", None)
    assert u.consumer.paused == {B0, B1} and u.pauses.operator == {B0, B1}
    buffer(u.batcher, B0, range(2))
    u.pauses.check()
    u.pauses.resume_by_operator("bars", 1)
    assert u.pauses.operator == {B0}
    assert u.consumer.paused == {B0, B1}  # the buffer is still full
    u.batcher.drop([B0])
    u.pauses.check()
    assert u.consumer.paused == {B0}


def test_an_operator_pause_of_a_partition_not_assigned_here_is_nothing_and_its_resume_is_harmless() -> None:
    u = units()
    u.consumer.group_assigns([B0])
    u.pauses.pause_by_operator("bars", 1)
    assert u.pauses.operator == set() and u.consumer.paused == set()
    u.pauses.resume_by_operator("bars", 1)
    assert u.consumer.paused == set()


def test_an_unclaimed_partition_stays_paused_whatever_the_operator_or_the_buffer_do() -> None:
    u = units(max_buffered=1)
    u.ledger.down = True
    u.consumer.group_assigns([B0])
    assert u.consumer.paused == {B0}
    u.pauses.pause_by_operator("bars", 0)
    u.pauses.resume_by_operator("bars", 0)
    buffer(u.batcher, B0, range(1))
    u.pauses.check()
    u.batcher.drop([B0])
    u.pauses.check()
    assert u.consumer.paused == {B0}
    assert u.ownership.unclaimed == {B0}
