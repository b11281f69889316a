"""An error that is neither poison nor transient stops the worker: it never dead-letters a topic."""

from __future__ import annotations

import psycopg
import pytest

from mds_sink.config.settings import load_settings
from tests.support import CRASHED, Scenario, bar, make_scenario, running_sink, wait_until
from tests.throwaway import migrated, owner_url


def test_a_broken_grant_stops_the_sink_with_nothing_dead_lettered_or_committed() -> None:
    base = make_scenario(partitions=1, tables=["bars"]).settings
    retry = {"initial_backoff_s": 0.05, "max_backoff_s": 0.2, "unknown_error_attempts": 3}
    with migrated(
        load_settings(),
        owner_url(base),
        kafka=base.kafka.model_dump(),
        topics=base.topics.model_dump(),
        http={"port": 0},
        retry=retry,
    ) as settings:
        with psycopg.connect(owner_url(settings), autocommit=True) as conn:
            conn.execute("INSERT INTO tenants (tenant_id, name) VALUES ('6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f', 'g')")
            # A deployment mistake, not a bad record: "permission denied for view bars_minute" (the sink
            # writes through tenant_view).
            conn.execute("REVOKE INSERT ON tenant_view.bars_minute FROM mds_writer")
        scenario = Scenario(settings)
        scenario.produce("bars", [bar("6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f", "G", m) for m in range(20)])
        with (
            pytest.raises(RuntimeError, match="permission denied for view bars_minute"),
            running_sink(settings) as worker,
        ):
            wait_until(lambda: id(worker) in CRASHED, what="the sink to stop on its own")
        assert scenario.committed() == {(scenario.topic("bars"), 0): -1001}
        assert scenario.dead_letters("bars", expect=0) == []
