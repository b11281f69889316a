"""Migrations on a real PostgreSQL: each one up and down, concurrent runs, the sink behind head."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from mds_sink.cli.app import app
from mds_sink.config.settings import Settings, load_settings
from mds_sink.db import migrate
from mds_sink.db.migrate import MIGRATION_LOCK_KEY
from mds_sink.errors import StartupError
from mds_sink.service import Service
from tests.support import wait_until
from tests.throwaway import database_settings, owner_url, throwaway_database

# Everything a migration may create or change, in a comparable form.
SNAPSHOT_SQL = """
SELECT 'rel', n.nspname || '.' || c.relname, c.relkind::text || ' ' || c.relrowsecurity || ' ' || c.relforcerowsecurity
       || ' ' || coalesce(c.relacl::text, '') || ' ' || coalesce(c.reloptions::text, '')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('public', 'tenant_view') AND c.relname NOT LIKE 'alembic_version%'
UNION ALL
SELECT 'trigger', t.tgrelid::regclass::text || '.' || t.tgname, pg_get_triggerdef(t.oid)
FROM pg_trigger t WHERE NOT t.tgisinternal
UNION ALL
SELECT 'policy', polrelid::regclass::text || '.' || polname, pg_get_expr(polqual, polrelid) FROM pg_policy
UNION ALL
SELECT 'function', p.oid::regprocedure::text, coalesce(p.proacl::text, '')
FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
UNION ALL
SELECT 'schema', nspname, coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'tenant_view'
UNION ALL
SELECT 'database', datname, coalesce(datacl::text, '') FROM pg_database WHERE datname = current_database()
UNION ALL
-- Columns of tables and views, with their place among the live ones (attnum itself grows when a
-- dropped column is added again), type, NOT NULL, default and comment: migrations add columns too.
SELECT 'column', c.oid::regclass::text || '.' || a.attname,
       (row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum))::text || ' '
       || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || ' '
       || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' ' || coalesce(col_description(c.oid, a.attnum), '')
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname IN ('public', 'tenant_view') AND c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0
  AND NOT a.attisdropped AND c.relname NOT LIKE 'alembic_version%'
ORDER BY 1, 2
"""


def snapshot(s: Settings) -> list[tuple[Any, ...]]:
    with psycopg.connect(owner_url(s)) as conn:
        return conn.execute(SNAPSHOT_SQL).fetchall()


@pytest.fixture
def empty_db() -> Iterator[Settings]:
    base = load_settings()
    with throwaway_database(owner_url(base)) as name:
        yield database_settings(base, name)


def test_each_migration_goes_up_and_down_to_exactly_the_schema_before_it(empty_db: Settings) -> None:
    s = empty_db
    revisions = [rev for rev, _, _ in migrate.history(s)]
    assert revisions[:7] == ["0001", "0002", "0003", "0004", "0005", "0006", "0007"]
    previous = "base"
    for rev in revisions:
        before = snapshot(s)
        migrate.upgrade(s, rev)
        assert migrate.current_revision(s) == rev
        after = snapshot(s)
        assert after != before, f"{rev} changed nothing"
        migrate.downgrade(s, previous)
        assert migrate.current_revision(s) == (None if previous == "base" else previous)
        assert snapshot(s) == before, f"downgrading {rev} left the schema different"
        migrate.upgrade(s, rev)
        assert snapshot(s) == after, f"{rev} applied twice gives a different schema"
        previous = rev
    assert migrate.current_revision(s) == migrate.head_revision(s)


def test_concurrent_upgrades_wait_for_each_other_on_the_advisory_lock(empty_db: Settings) -> None:
    s = empty_db
    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            migrate.upgrade(s)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
    )
    with psycopg.connect(owner_url(s), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        runs = [threading.Thread(target=upgrade, name=f"upgrade-{i}") for i in range(2)]
        for run in runs:
            run.start()
        wait_until(lambda: holder.execute(waiting).fetchone() == (2,), timeout_s=20, what="both runs at the lock")
        assert migrate.current_revision(s) is None  # neither got past it
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    for run in runs:
        run.join(timeout=60)
    assert not any(run.is_alive() for run in runs)
    assert errors == []  # the second found the schema at head and had nothing to do
    assert migrate.current_revision(s) == migrate.head_revision(s)


def test_the_sink_refuses_to_start_behind_head_and_names_the_revision_it_needs(empty_db: Settings) -> None:
    s = empty_db
    head = migrate.head_revision(s)
    for at, described in ((None, "an empty schema"), ("0001", "revision 0001")):
        if at is not None:
            migrate.upgrade(s, at)
        service = Service(s)
        try:
            with pytest.raises(
                StartupError, match=re.escape(f"is at {described}; this mds-sink needs revision {head}")
            ):
                service.run()
        finally:
            service.pool.close()
    env = {
        "MDS_SINK_DATABASE__OWNER_URL": owner_url(s),
        "MDS_SINK_DATABASE__URL": s.database.url.get_secret_value(),
    }
    behind = CliRunner().invoke(app, ["admin", "check"], env=env)
    assert (behind.exit_code, behind.output) == (
        1,
        f"database at 0001, code needs {head}: run `mds-sink admin migrate`\n",
    )
    migrate.upgrade(s)
    at_head = CliRunner().invoke(app, ["admin", "check"], env=env)
    assert (at_head.exit_code, at_head.output) == (0, f"database at head ({head})\n")
