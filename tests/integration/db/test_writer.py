"""The binary COPY of bars and quotes: what it cannot carry is poison for that row alone, never wrapped."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from mds_sink.core.batcher import DeadLetter, Source, TableBatch
from mds_sink.core.tables import BARS
from mds_sink.db.writer import Writer, database_pool
from mds_sink.sink.pipeline import settle
from tests.control import MINUTE, T0, bar_row, writer_pool
from tests.support import Scenario, make_scenario


@pytest.fixture
def scenario() -> Iterator[Scenario]:
    yield make_scenario(partitions=1, tables=["bars"])


def test_a_value_the_binary_copy_cannot_carry_is_dead_lettered_and_the_rest_lands(scenario: Scenario) -> None:
    tenant = scenario.add_tenant("binary")
    rows = [bar_row(tenant, "BIN", T0 + m * MINUTE, 10.0 + m) for m in range(10)]
    wrapped = (*rows[3][:12], 2**40)  # a revision an Avro int can carry on the wire, an integer column cannot
    mistyped = (*rows[6][:5], "1.5", *rows[6][6:])  # text where the column is double precision
    rows[3], rows[6] = wrapped, mistyped
    batch = TableBatch(BARS, 0.0)
    for offset, row in enumerate(rows):
        batch.add(row, Source("bars", 0, offset), 0)
    found: list[DeadLetter] = []

    def send(dead: Sequence[DeadLetter]) -> None:  # named as DeadLetterSink's parameter
        found.extend(dead)

    pool = writer_pool(scenario.settings)
    try:
        writer = Writer(pool, scenario.settings.kafka.group_id)
        batch.fence = {tp: claim.epoch for tp, claim in writer.claim([("bars", 0)]).items()}
        settled = settle(batch, writer, send)
    finally:
        pool.close()
    assert {(d.source.offset, d.rejection.code) for d in found} == {
        (3, "db_numeric_out_of_range"),
        (6, "db_data_error"),
    }
    assert settled.next_offsets == {("bars", 0): 10}
    assert scenario.rows(tenant, "SELECT count(*), max(revision) FROM bars") == [(8, 0)]


def test_the_sinks_sessions_never_compile_plans(scenario: Scenario) -> None:
    """JIT costs tens of milliseconds per statement whose estimate passes jit_above_cost, for statements
    that run in a few: every session of the sink's pools has it off, whatever the server's default."""
    pool = database_pool(scenario.settings.database, min_size=1, max_size=1, name="jit")
    pool.open(wait=True, timeout=10)
    try:
        with pool.connection() as conn:
            assert conn.execute("SELECT current_setting('jit')").fetchone() == ("off",)
    finally:
        pool.close()
