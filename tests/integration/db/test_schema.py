"""The database schema on a real PostgreSQL: migrations, roles, row-level security; the real broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from confluent_kafka import Consumer

from mds_sink.avro.codec import Decoder, LocalSchemas, load_schema_file
from mds_sink.config.settings import Settings, load_settings
from mds_sink.core.catalog import TENANT_TABLES
from mds_sink.db import migrate
from mds_sink.kafka.clients import consumer_config
from tests.support import SCHEMAS, Scenario, make_scenario, unique


@pytest.fixture
def scratch_db() -> Iterator[Settings]:
    """An empty database of its own, owned by the owner role, to migrate from nothing."""
    base = load_settings()
    assert base.database.owner_url is not None
    owner = base.database.owner_url.get_secret_value()
    name = unique("mds_scratch").replace("-", "_")
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        conn.execute(f"REVOKE ALL ON DATABASE {name} FROM PUBLIC")
    with psycopg.connect(owner.rsplit("/", 1)[0] + f"/{name}", autocommit=True) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    urls = {
        k: v.get_secret_value().rsplit("/", 1)[0] + f"/{name}"
        for k, v in (
            ("url", base.database.url),
            ("owner_url", base.database.owner_url),
            ("reader_url", base.database.reader_url),
        )
        if v is not None
    }
    yield load_settings(database=urls)
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_migrations_apply_to_an_empty_database_and_rerun_as_a_no_op(scratch_db: Settings) -> None:
    assert migrate.current_revision(scratch_db) is None
    migrate.upgrade(scratch_db)
    head = migrate.head_revision(scratch_db)
    assert migrate.current_revision(scratch_db) == head
    migrate.upgrade(scratch_db)  # again: nothing to do, nothing fails
    assert migrate.current_revision(scratch_db) == head
    owner = scratch_db.database.owner_url
    assert owner is not None
    with psycopg.connect(owner.get_secret_value()) as conn:
        found = conn.execute(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relname = ANY(%s) ORDER BY relname",
            (list(TENANT_TABLES),),
        ).fetchall()
    assert found == sorted((t, True, True) for t in TENANT_TABLES)


def test_migrations_go_down_to_nothing_and_up_again(scratch_db: Settings) -> None:
    migrate.upgrade(scratch_db)
    migrate.downgrade(scratch_db, "base")
    assert migrate.current_revision(scratch_db) is None
    owner = scratch_db.database.owner_url
    assert owner is not None
    with psycopg.connect(owner.get_secret_value()) as conn:
        left = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'v')"
        ).fetchall()
    assert left == [("alembic_version",)]
    migrate.upgrade(scratch_db)
    assert migrate.current_revision(scratch_db) == migrate.head_revision(scratch_db)


def test_roles_the_writer_cannot_bypass_isolation() -> None:
    s = load_settings()
    with psycopg.connect(s.database.url.get_secret_value()) as conn:
        superuser, bypass = conn.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone() or (None, None)
        owned = conn.execute(
            # Its temporary staging tables aside, which live and die with its sessions.
            "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) "
            "AND relpersistence <> 't'"
        ).fetchone()
        assert (superuser, bypass, owned) == (False, False, (0,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM bars_minute")
    assert s.database.reader_url is not None
    with (
        psycopg.connect(s.database.reader_url.get_secret_value()) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (gen_random_uuid(), 'x')")


# The writer has no privilege on the tables (migration 0007): it writes through tenant_view.
BAR_SQL = (
    "INSERT INTO tenant_view.bars_minute (ts, tenant_id, vendor, symbol, timeframe, open, high, low, close, volume) "
    "VALUES (now(), %s, 'v', %s, '1m', 1, 1, 1, 1, 1)"
)


def _as_writer(scenario: Scenario, tenant: str | None, sql: str, params: tuple[object, ...]) -> None:
    with psycopg.connect(scenario.writer_url) as conn, conn.transaction():
        if tenant is not None:
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
        conn.execute(sql, params)


def test_row_level_security_holds_for_the_writer_and_the_reader() -> None:
    scenario = Scenario(load_settings())
    a, b = scenario.add_tenant("rls-a"), scenario.add_tenant("rls-b")
    _as_writer(scenario, a, BAR_SQL, (a, "AONLY"))
    _as_writer(scenario, b, BAR_SQL, (b, "BONLY"))
    # Context A, a row of B: refused by the policy's WITH CHECK.
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        _as_writer(scenario, a, BAR_SQL, (b, "SNEAK"))
    # No context: nothing writable, nothing visible.
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        _as_writer(scenario, None, BAR_SQL, (a, "NOCTX"))
    assert scenario.rows(None, "SELECT count(*) FROM bars_minute") == [(0,)]
    assert scenario.rows(None, "SELECT count(*) FROM tenant_view.bars_minute", url=scenario.writer_url) == [(0,)]
    # Context A sees exactly A's rows, as the reader and as the writer.
    assert scenario.rows(a, "SELECT tenant_id::text, symbol FROM bars") == [(a, "AONLY")]
    assert scenario.rows(a, "SELECT tenant_id::text, symbol FROM tenant_view.bars", url=scenario.writer_url) == [
        (a, "AONLY")
    ]
    # An update cannot move a row to another tenant either.
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        _as_writer(scenario, a, "UPDATE tenant_view.bars_minute SET tenant_id = %s WHERE tenant_id = %s", (b, a))
    # The tenant context is transaction-local: the next transaction on the same session has none.
    with psycopg.connect(scenario.writer_url) as conn:
        with conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (a,))
        leftover = conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone()
        assert leftover in (("",), (None,))
        assert conn.execute("SELECT count(*) FROM tenant_view.bars_minute").fetchone() == (0,)


def test_a_produced_avro_record_is_consumed_back_from_the_broker() -> None:
    scenario = make_scenario(partitions=1, tables=["quotes"])
    tenant = str(uuid.uuid4())
    record = {
        "tenant_id": tenant,
        "vendor": "polygon",
        "symbol": "MSFT",
        "ts": "2026-11-20T15:00:00.123456Z",
        "bid": 415.1,
        "ask": 415.2,
        "bid_size": 300.0,
        "ask_size": 500.0,
        "exchange": "XNAS",
    }
    scenario.produce("quotes", [record])
    consumer = Consumer({**consumer_config(scenario.settings), "group.id": unique("roundtrip")})
    consumer.subscribe([scenario.topic("quotes")])
    try:
        msg = None
        for _ in range(100):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                break
        assert msg is not None and msg.error() is None
        decoded = Decoder(load_schema_file(SCHEMAS / "quote.avsc"), LocalSchemas.from_dir(SCHEMAS)).decode(msg.value())
    finally:
        consumer.close()
    assert msg.key() == f"{tenant}|polygon|MSFT".encode()
    epoch_us = (datetime(2026, 11, 20, 15, 0, 0, 123456, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1
    )
    assert decoded == {**record, "ts": epoch_us, "revision": 0}
