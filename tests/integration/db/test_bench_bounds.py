"""The benchmark's database bound writes through the sink's own Writer, claims and ledger included."""

from __future__ import annotations

from benchmarks.bounds import Consumed, batches, write_all
from tests.control import MINUTE, T0, bar_row
from tests.support import make_scenario


def test_the_write_bound_claims_its_partitions_and_lands_every_row() -> None:
    scenario = make_scenario(partitions=2, tables=["bars"])
    tenant = scenario.add_tenant("bench")
    topic = scenario.topic("bars")
    rows = [(bar_row(tenant, f"B{p}", T0 + m * MINUTE, 10.0 + m), p, m) for p in range(2) for m in range(30)]
    todo = batches(Consumed(rows={"bars": rows}, records=len(rows)), {topic: "bars"}, max_rows=25)
    written = write_all(scenario.settings, todo, group=scenario.settings.kafka.group_id)
    assert (written.records, written.rows) == (60, 60)
    assert scenario.rows(tenant, "SELECT count(*) FROM bars") == [(60,)]
    ledger = scenario.rows(
        None,
        "SELECT partition, next_offset FROM sink_offsets WHERE consumer_group = %s ORDER BY partition",
        (scenario.settings.kafka.group_id,),
        url=scenario.owner_url,
    )
    assert ledger == [(0, 30), (1, 30)]
