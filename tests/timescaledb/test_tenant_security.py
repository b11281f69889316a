"""Guard mode on a real TimescaleDB: every chunk and compressed-chunk path, read and write, for each role.

After `admin policies apply` (bars_minute in guard mode, compressed) and with tenant A's and B's bars in
a compressed chunk: the tenant reader, the gateway reader and the writer reach no TimescaleDB internal
relation at all (chunks, compressed hypertables and chunks, materializations, the aggregates' views),
neither to read nor to write; the owner does (it owns them: documented). The sink's own path, upserts
through tenant_view into the compressed range, keeps working, and so do decompression and compression.
A grant that reappears on a chunk is reported by `policies show` and revoked by `policies apply`.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import psycopg
import pytest

from mds_sink.config.settings import Settings
from mds_sink.control import tenants
from mds_sink.db.sql import SET_TENANT
from tests.control import MINUTE, T0, bar_row, cli, write_bars
from tests.throwaway import migrated, owner_url, reader_url, with_user

pytestmark = pytest.mark.timescaledb

OLD = T0 - timedelta(days=10)  # well past bars_minute's compress_after
INTERNAL_SQL = """
SELECT c.oid::regclass::text, c.relkind::text,
       (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum LIMIT 1)
FROM pg_class c
WHERE c.relnamespace = '_timescaledb_internal'::regnamespace AND c.relkind IN ('r', 'v', 'm')
  AND c.relowner = 'mds_owner'::regrole
ORDER BY 1
"""

# What an attempt on an internal relation may end with: permission denied, or TimescaleDB refusing first.
REFUSED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.DataCorrupted, psycopg.errors.FeatureNotSupported)
COMPRESSED_SQL = (
    "SELECT format('%I.%I', ch.schema_name, ch.table_name) FROM _timescaledb_catalog.chunk ch "
    "JOIN _timescaledb_catalog.chunk u ON u.compressed_chunk_id = ch.id ORDER BY 1"
)


@dataclass
class Secured:
    settings: Settings
    a: str
    b: str
    reader_a: tenants.Credential
    internal: list[tuple[str, str, str]]  # relation, relkind, its first column
    compressed: list[str]  # compressed chunks holding A's and B's bars

    def url_of(self, cred: tenants.Credential) -> str:
        return with_user(owner_url(self.settings), cred.role, cred.password)

    def roles(self) -> dict[str, str]:
        return {
            "tenant reader": self.url_of(self.reader_a),
            "gateway reader": reader_url(self.settings),
            "writer": self.settings.database.url.get_secret_value(),
        }


def _bars(tenant: str, symbol: str, close: float) -> list[tuple[object, ...]]:
    return [bar_row(tenant, symbol, OLD + m * MINUTE, close + m) for m in range(3)]


@pytest.fixture(scope="module")
def secured(superuser_url: str, timescale_base: Settings) -> Iterator[Secured]:
    with migrated(timescale_base, superuser_url, timescaledb=True) as s:
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        with psycopg.connect(owner_url(s), autocommit=True) as conn:
            conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, 'acme'), (%s, 'globex')", (a, b))
        applied = cli(s, "admin", "policies", "apply")
        assert applied.exit_code == 0, applied.output
        with psycopg.connect(owner_url(s), autocommit=True) as conn:
            conn.execute(
                "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs "
                "WHERE hypertable_schema = 'public'"
            )
        write_bars(s, _bars(a, "CMP", 10.0) + _bars(b, "CMP", 90.0))
        with psycopg.connect(owner_url(s), autocommit=True) as conn:
            conn.execute("SELECT compress_chunk(c) FROM show_chunks('bars_minute') c")
            conn.execute("CALL refresh_continuous_aggregate('bars_5m', NULL, NULL)")
            compressed = [str(r[0]) for r in conn.execute(COMPRESSED_SQL)]
            internal = [(str(r), str(k), str(c)) for r, k, c in conn.execute(INTERNAL_SQL)]  # c: None -> "None"
        reader_a = tenants.create_reader(owner_url(s), superuser_url, "acme")
        try:
            yield Secured(s, a, b, reader_a, internal, compressed)
        finally:
            tenants.drop_reader(owner_url(s), superuser_url, reader_a.role)


def test_there_are_chunks_compressed_chunks_and_materializations_to_attack(secured: Secured) -> None:
    names = [r for r, _, _ in secured.internal]
    assert secured.compressed and set(secured.compressed) <= set(names)
    for kind in (
        "_hyper_",
        "compress_hyper_",
        "_compressed_hypertable_",
        "_materialized_hypertable_",
        "_partial_view_",
    ):
        assert any(kind in n for n in names), kind


@pytest.mark.parametrize("role", ["tenant reader", "gateway reader", "writer"])
def test_no_role_but_the_owner_reads_or_writes_an_internal_relation(secured: Secured, role: str) -> None:
    url = secured.roles()[role]
    attempts = 0
    early: set[tuple[str, str, str]] = set()
    for relation, kind, column in secured.internal:
        statements = [f"SELECT count(*) FROM {relation}"]
        if kind == "r" and column != "None":  # a compressed hypertable may have no column
            statements += [
                f'UPDATE {relation} SET "{column}" = "{column}"',
                f"DELETE FROM {relation}",
                f"INSERT INTO {relation} SELECT * FROM {relation} LIMIT 0",
                f"TRUNCATE {relation}",
            ]
        for sql in statements:
            with psycopg.connect(url) as conn:
                conn.execute(SET_TENANT, (secured.a,))
                with pytest.raises(REFUSED) as raised:
                    conn.execute(sql)
                attempts += 1
            error = raised.value
            if isinstance(error, psycopg.errors.InsufficientPrivilege):
                assert re.match(r"permission denied for (table|view) ", str(error)), str(error)
            else:  # TimescaleDB's own refusals, before any permission check (the owner gets them too)
                early.add((type(error).__name__, str(error).splitlines()[0].split(" ")[0] + " ...", sql.split()[0]))
    assert attempts > 20
    # 2.28.3: a compressed hypertable with compressed chunks cannot be selected at all ("chunk ... has no
    # dimension slices"), and a materialized hypertable cannot be truncated; nothing is read or changed.
    assert early <= {("DataCorrupted", "chunk ...", "SELECT"), ("FeatureNotSupported", "cannot ...", "TRUNCATE")}


def test_moving_another_tenants_compressed_batch_is_refused_and_the_owner_can_do_it(secured: Secured) -> None:
    chunk = secured.compressed[0]
    steal = f"UPDATE {chunk} SET tenant_id = %s WHERE tenant_id = %s"
    with psycopg.connect(secured.roles()["writer"]) as conn:
        conn.execute(SET_TENANT, (secured.a,))
        with pytest.raises(
            psycopg.errors.InsufficientPrivilege, match=f"permission denied for table {chunk.split('.')[1]}"
        ):
            conn.execute(steal, (secured.a, secured.b))
    # The owner owns the chunks: it could (documented: the owner credential is every tenant's).
    with psycopg.connect(owner_url(secured.settings)) as conn:
        assert conn.execute(f"SELECT count(*) FROM {chunk} WHERE tenant_id = %s", (secured.b,)).fetchone() == (1,)
        conn.rollback()


def test_upserts_through_the_views_reach_the_compressed_range_and_compression_still_works(secured: Secured) -> None:
    s, a, b = secured.settings, secured.a, secured.b
    write_bars(s, [bar_row(a, "CMP", OLD, 15.0, revision=1), bar_row(a, "CMP", OLD + 9 * MINUTE, 19.0)])
    seen = "SELECT ts, close, revision FROM tenant_view.bars_minute WHERE symbol = 'CMP' ORDER BY ts"
    with psycopg.connect(secured.url_of(secured.reader_a)) as conn:
        assert conn.execute(seen).fetchall() == [
            (OLD, 15.0, 1),
            (OLD + MINUTE, 11.0, 0),
            (OLD + 2 * MINUTE, 12.0, 0),
            (OLD + 9 * MINUTE, 19.0, 0),
        ]
    with psycopg.connect(owner_url(s), autocommit=True) as conn:
        chunks = [
            str(r[0]) for r in conn.execute("SELECT show_chunks('bars_minute', older_than => now() - interval '1 day')")
        ]
        for chunk in chunks:
            conn.execute("SELECT decompress_chunk(%s, if_compressed => true)", (chunk,))
        for chunk in chunks:
            conn.execute("SELECT compress_chunk(%s, if_not_compressed => true)", (chunk,))
    with psycopg.connect(reader_url(s)) as conn:
        conn.execute(SET_TENANT, (b,))
        assert conn.execute(seen).fetchall() == [(OLD + m * MINUTE, 90.0 + m, 0) for m in range(3)]
    # B's correction into the recompressed range, as the sink writes it.
    write_bars(s, [bar_row(b, "CMP", OLD + MINUTE, 99.0, revision=2)])
    with psycopg.connect(reader_url(s)) as conn:
        conn.execute(SET_TENANT, (b,))
        assert conn.execute(seen).fetchall()[1] == (OLD + MINUTE, 99.0, 2)


def test_a_grant_that_reappears_on_a_chunk_is_shown_and_revoked_by_apply(secured: Secured) -> None:
    s = secured.settings
    with psycopg.connect(owner_url(s)) as conn:
        chunk = str(conn.execute(COMPRESSED_SQL).fetchall()[0][0])
    with psycopg.connect(owner_url(s), autocommit=True) as conn:
        conn.execute(f"GRANT SELECT, INSERT, UPDATE ON {chunk} TO mds_writer")
    shown = cli(s, "admin", "policies", "show")
    assert (
        "pending _timescaledb_internal: privileges of mds_writer on 1 chunk, compressed-chunk or materialization"
        in (shown.stdout)
    )
    applied = cli(s, "admin", "policies", "apply")
    assert applied.exit_code == 0, applied.output
    assert applied.stdout.startswith(
        "_timescaledb_internal: privileges of mds_writer on 1 chunk, compressed-chunk or materialization relation(s) "
        "revoked"
    )
    with (
        psycopg.connect(secured.roles()["writer"]) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table"),
    ):
        conn.execute(f"SELECT count(*) FROM {chunk}")
    assert (
        cli(s, "admin", "policies", "apply").stdout == "nothing to change: the database matches the policy settings\n"
    )


def test_policies_show_reports_a_failed_job_with_its_error(secured: Secured) -> None:
    s = secured.settings
    with psycopg.connect(owner_url(s), autocommit=True) as conn:
        conn.execute(
            "CREATE PROCEDURE public.mds_test_failing_job(job_id int, config jsonb) LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'failed to start a background worker (simulated)'; END $$"
        )
        (job,) = conn.execute(
            "SELECT add_job('public.mds_test_failing_job', '1 hour', initial_start => now())"
        ).fetchone() or (None,)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                stats = conn.execute(
                    "SELECT total_failures FROM timescaledb_information.job_stats WHERE job_id = %s", (job,)
                ).fetchone()
                if stats is not None and stats[0]:
                    break
                time.sleep(0.5)
            else:
                pytest.fail("the scheduler did not run the job within 60 s (timescaledb.max_background_workers?)")
            shown = cli(s, "admin", "policies", "show")
            assert (
                f"failed job {job} mds_test_failing_job on public.mds_test_failing_job: 1 failed run(s), last run "
                "Failed; last error: failed to start a background worker (simulated)"
            ) in shown.stdout.splitlines()
        finally:
            conn.execute("SELECT delete_job(%s)", (job,))
            conn.execute("DROP PROCEDURE public.mds_test_failing_job(int, jsonb)")
