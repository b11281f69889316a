"""`admin policies apply` takes back privileges nobody may hold since migration 0007 (no server)."""

from __future__ import annotations

from dataclasses import replace

from mds_sink.config.policy_settings import PolicySettings
from mds_sink.control.policies import DatabaseState, Exposure, FailedJob, plan
from tests.unit.control.test_policies import applied, fresh_timescaledb


def test_grants_on_chunks_and_compressed_chunks_are_revoked_in_a_transaction_of_their_own() -> None:
    state = replace(
        applied(fresh_timescaledb()),
        exposed=(
            Exposure('_timescaledb_internal."_hyper_1_1_chunk"', ("mds_writer",)),
            Exposure("_timescaledb_internal.compress_hyper_8_2_chunk", ("PUBLIC", "mds_writer")),
        ),
    )
    p = plan(state, PolicySettings(), reader="mds_reader")
    assert len(p.transactions) == 1
    (change,) = p.transactions[0].changes
    assert change.target == "_timescaledb_internal"
    assert change.what.startswith("privileges of PUBLIC, mds_writer on 2 chunk, compressed-chunk or materialization")
    assert change.sql == (
        'REVOKE ALL ON _timescaledb_internal."_hyper_1_1_chunk" FROM "mds_writer"',
        'REVOKE ALL ON _timescaledb_internal.compress_hyper_8_2_chunk FROM PUBLIC, "mds_writer"',
    )
    # Once revoked the catalogs show none: a second run plans nothing.
    assert plan(replace(state, exposed=()), PolicySettings(), reader="mds_reader").changes == []


def test_a_writer_grant_on_a_table_is_revoked_with_or_without_timescaledb() -> None:
    done = applied(fresh_timescaledb())
    tables = dict(done.tables)
    tables["bars_minute"] = replace(tables["bars_minute"], grantees=("mds_writer",))
    tables["latest_prices"] = replace(tables["latest_prices"], grantees=("mds_writer",))
    for state in (replace(done, tables=tables), DatabaseState(None, tables, {})):
        changes = [c for c in plan(state, PolicySettings(), reader="mds_reader").changes if c.sql[0].startswith("REV")]
        assert sorted((c.target, c.sql) for c in changes) == [
            ("bars_minute", ('REVOKE ALL ON public.bars_minute FROM "mds_writer"',)),
            ("latest_prices", ('REVOKE ALL ON public.latest_prices FROM "mds_writer"',)),
        ]


def test_a_failed_job_is_described_with_its_last_error() -> None:
    job = FailedJob(
        1000, "policy_refresh_continuous_aggregate", "bars_5m", 2, "Failed", "failed to start a background worker"
    )
    assert job.describe() == (
        "job 1000 policy_refresh_continuous_aggregate on bars_5m: 2 failed run(s), last run Failed; "
        "last error: failed to start a background worker"
    )
