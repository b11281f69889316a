"""errors.tolerance and the dead-letter context headers, as Kafka Connect users know them."""

from __future__ import annotations

import pytest

from mds_sink.errors import SinkFailed
from tests.support import CRASHED, bar, drained, make_scenario, running_sink, wait_until


def test_stop_tolerance_stops_at_a_bad_record_and_commits_nothing_of_its_batch() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"], errors={"tolerance": "stop"})
    tenant = scenario.add_tenant("stop")
    good = [bar(tenant, "STOP", m) for m in range(6)]
    bad = {**bar(tenant, "STOP", 99), "high": 1.0}  # high below low
    scenario.produce("bars", [*good[:3], bad, *good[3:]])
    topic = scenario.topic("bars")
    with (
        pytest.raises(
            SinkFailed, match=rf"{topic}\[0\] offset 3: validate/ohlc_inconsistent.*errors.tolerance is stop"
        ),
        running_sink(scenario.settings) as worker,
    ):
        wait_until(lambda: id(worker) in CRASHED, what="the sink to stop on the bad record")
    assert scenario.committed() == {(topic, 0): -1001}  # nothing committed: the batch is read again
    assert scenario.rows(tenant, "SELECT count(*) FROM bars") == [(0,)]
    assert scenario.dead_letters("bars", expect=0) == []

    # The operator chooses to go on: the same records, now dead-lettered and written.
    go_on = scenario.settings.model_copy(
        update={
            "errors": scenario.settings.errors.model_copy(update={"tolerance": "dead-letter", "context_headers": True})
        }
    )
    with running_sink(go_on) as worker:
        wait_until(lambda: drained(worker, scenario.end_offsets()), what="everything committed")
    assert scenario.rows(tenant, "SELECT count(*) FROM bars") == [(6,)]
    (letter,) = scenario.dead_letters("bars", expect=1)
    headers = dict(letter.headers() or [])
    assert (headers["mds.dlq.reason"], headers["mds.dlq.source.offset"]) == (b"ohlc_inconsistent", b"3")
    assert headers["mds.dlq.exception.class"] == b"mds_sink.core.rejection.RecordRejected"
    assert headers["mds.dlq.exception.stacktrace"].startswith(b"Traceback (most recent call last):")
    assert b"in bar" in headers["mds.dlq.exception.stacktrace"]  # the validator that refused it
