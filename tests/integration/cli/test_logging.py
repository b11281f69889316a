"""What a running sink logs: nothing per record on the happy path; a rejected record names its coordinates."""

from __future__ import annotations

import json
import logging

import pytest

from mds_sink.logs import JsonFormatter
from tests.integration.records import bar, unique_symbols
from tests.support import drained, make_scenario, running_sink, wait_until

RECORDS = 400


def test_a_stream_logs_no_line_per_record_and_one_per_dead_letter(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    scenario = make_scenario(partitions=2, tables=("bars",))
    tenant = scenario.add_tenant("logs")
    encoder = scenario.encoder("bars")
    good = [bar(tenant, s, i % 30) for i, s in enumerate(unique_symbols(RECORDS))]
    poison = bar("00000000-0000-4000-8000-000000000000", "NOBODY")
    with running_sink(scenario.settings) as worker:
        wait_until(lambda: worker.state.joined, timeout_s=30, what="sink joined")
        caplog.clear()
        scenario.produce_values("bars", [(encoder.key(r), encoder.encode(r)) for r in [*good, poison]])
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), timeout_s=30, what="the stream committed")
        during = [r for r in caplog.records if r.name.startswith("mds_sink")]

    about_records = [r for r in during if hasattr(r, "offset")]
    assert len(about_records) == 1, [r.getMessage() for r in about_records]
    # Everything else is about the sink, not a record: a handful of lines for hundreds of records.
    assert len(during) < 20, [r.getMessage() for r in during]

    line = json.loads(JsonFormatter().format(about_records[0]))
    assert line["level"] == "warning"
    assert line["topic"] == scenario.topic("bars")
    assert isinstance(line["partition"], int) and isinstance(line["offset"], int)
    assert line["reason"] == "unknown_tenant"
    assert "unknown_tenant" in line["msg"]
