"""Ownership fencing in the database: a member whose claim was superseded cannot write rows or move the ledger."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mds_sink.core.tables import BARS
from mds_sink.db.writer import Writer
from mds_sink.errors import OwnershipLost
from tests.control import MINUTE, T0, bar_row, writer_pool
from tests.support import Scenario, make_scenario


@pytest.fixture
def scenario() -> Iterator[Scenario]:
    yield make_scenario(partitions=1, tables=["bars"])


def ledger(scenario: Scenario) -> list[tuple[str, int, int, int]]:
    return [
        (str(t), int(p), int(o), int(e))
        for t, p, o, e in scenario.rows(
            None,
            "SELECT topic, partition, next_offset, epoch FROM sink_offsets WHERE consumer_group = %s",
            (scenario.settings.kafka.group_id,),
            url=scenario.owner_url,
        )
    ]


def test_a_member_whose_partition_was_claimed_again_writes_nothing_and_the_ledger_never_goes_back(
    scenario: Scenario,
) -> None:
    tenant = scenario.add_tenant("fenced")
    tp = (scenario.topic("bars"), 0)
    original = [bar_row(tenant, "ZMB", T0 + m * MINUTE, 10.0) for m in range(3)]
    correction = [bar_row(tenant, "ZMB", T0 + m * MINUTE, 20.0) for m in range(3)]  # same revision, later offsets
    pool = writer_pool(scenario.settings)
    try:
        zombie = Writer(pool, scenario.settings.kafka.group_id)
        successor = Writer(pool, scenario.settings.kafka.group_id)
        old = zombie.claim([tp])[tp]
        assert (old.next_offset, old.epoch) == (0, 1)
        new = successor.claim([tp])[tp]  # the group moved the partition: a new epoch
        assert (new.next_offset, new.epoch) == (0, 2)
        successor.write(BARS, correction, {tp: 6}, fence={tp: new.epoch})
        # The stalled member wakes up with its batch of the original records (offsets 0-2) in hand.
        with pytest.raises(OwnershipLost, match=r"claimed by another member"):
            zombie.write(BARS, original, {tp: 3}, fence={tp: old.epoch})
        # A late batch of the current owner that is behind the ledger leaves the ledger where it is.
        successor.write(BARS, correction[:1], {tp: 4}, fence={tp: new.epoch})
    finally:
        pool.close()
    assert scenario.rows(tenant, "SELECT close FROM bars ORDER BY ts") == [(20.0,), (20.0,), (20.0,)]
    assert ledger(scenario) == [(tp[0], 0, 6, 2)]


def test_a_batch_of_a_partition_never_claimed_is_refused_before_it_writes(scenario: Scenario) -> None:
    tenant = scenario.add_tenant("unclaimed")
    tp = (scenario.topic("bars"), 0)
    pool = writer_pool(scenario.settings)
    try:
        with pytest.raises(OwnershipLost, match=r"no epoch claimed"):
            Writer(pool, scenario.settings.kafka.group_id).write(
                BARS, [bar_row(tenant, "NOC", T0, 10.0)], {tp: 1}, fence={}
            )
    finally:
        pool.close()
    assert scenario.rows(tenant, "SELECT count(*) FROM bars") == [(0,)]
    assert ledger(scenario) == []
