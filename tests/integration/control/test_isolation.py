"""Tenant isolation in both modes, `rls` and `guard`, with the same tests and the sink's own sessions.

Guard mode needs no TimescaleDB (a trigger and views), so it runs here on plain PostgreSQL; each
mode gets its own throwaway database, with every tenant table in that mode.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from mds_sink.config.settings import Settings, load_settings
from mds_sink.control import query
from mds_sink.core.catalog import TENANT_TABLES
from mds_sink.core.tables import BARS
from mds_sink.db import migrate
from mds_sink.db.classify import classify
from mds_sink.db.preflight import check_database
from mds_sink.db.sql import SET_TENANT, FlushSql, flush_sql
from mds_sink.db.writer import Writer, open_pool
from mds_sink.errors import ErrorClass
from tests.control import MINUTE, T0, bar_row, writer_pool
from tests.throwaway import migrated, owner_url, reader_url, switch_to_guard


def bar_at(tenant: str, symbol: str, minute: int, close: float, revision: int = 0) -> tuple[Any, ...]:
    return bar_row(tenant, symbol, T0 + minute * MINUTE, close, revision=revision)


@dataclass
class World:
    mode: str
    settings: Settings
    a: str
    b: str
    writer: Writer

    @property
    def writer_url(self) -> str:
        return self.settings.database.url.get_secret_value()

    def as_role(self, url: str, tenant: str | None, sql: str, params: tuple[Any, ...] = ()) -> psycopg.Cursor[Any]:
        with psycopg.connect(url) as conn, conn.transaction():
            if tenant is not None:
                conn.execute(SET_TENANT, (tenant,))
            return conn.execute(sql, params)

    def rows(self, url: str, tenant: str | None, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(url) as conn, conn.transaction():
            if tenant is not None:
                conn.execute(SET_TENANT, (tenant,))
            return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="module", params=["rls", "guard"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    base = load_settings()
    with migrated(base, owner_url(base)) as s:
        if request.param == "guard":
            switch_to_guard(s)
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        with psycopg.connect(owner_url(s), autocommit=True) as conn:
            conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, 'a'), (%s, 'b')", (a, b))
        pool = writer_pool(s)
        try:
            writer = Writer(pool, "isolation-test")
            writer.write(BARS, [bar_at(a, "AONLY", 0, 10.0), bar_at(b, "BONLY", 0, 20.0)], {})
            yield World(request.param, s, a, b, writer)
        finally:
            pool.close()


BAR_INSERT = (
    "INSERT INTO {rel} (ts, tenant_id, vendor, symbol, timeframe, open, high, low, close, volume) "
    "VALUES (%s, %s, 'v', %s, '1m', 1, 1, 1, 1, 1)"
)
INSERTS: dict[str, tuple[str, Callable[[str], tuple[Any, ...]]]] = {
    "bars_minute": (BAR_INSERT.format(rel="bars_minute"), lambda t: (T0, t, "SNEAK")),
    "bars_day": (BAR_INSERT.format(rel="bars_day").replace("'1m'", "'1d'"), lambda t: (T0, t, "SNEAK")),
    "quotes": (
        "INSERT INTO quotes (ts, tenant_id, vendor, symbol, bid, ask, bid_size, ask_size) "
        "VALUES (%s, %s, 'v', 'SNEAK', 1, 1, 1, 1)",
        lambda t: (T0, t),
    ),
    "latest_prices": (
        "INSERT INTO latest_prices (tenant_id, vendor, symbol, price, ts, source) "
        "VALUES (%s, 'v', 'SNEAK', 1, %s, 'bar')",
        lambda t: (t, T0),
    ),
    "jobs": (
        "INSERT INTO jobs (tenant_id, idempotency_key, job_type, requested_at) VALUES (%s, 'k', 'backfill', %s)",
        lambda t: (t, T0),
    ),
}


def test_the_sink_starts_in_this_mode(world: World) -> None:
    pool = open_pool(world.writer_url, min_size=0, max_size=1, connect_timeout_s=5, statement_timeout_ms=30_000)
    try:
        assert check_database(world.settings, pool) == migrate.head_revision(world.settings)
    finally:
        pool.close()


def test_the_sinks_sessions_write_and_correct_each_tenant(world: World) -> None:
    a, b = world.a, world.b
    world.writer.write(BARS, [bar_at(a, "SINK", m, 100.0 + m) for m in range(3)] + [bar_at(b, "SINK", 0, 7.0)], {})
    # A replay changes nothing; a correction (higher revision) replaces; an older revision does not.
    world.writer.write(BARS, [bar_at(a, "SINK", 0, 100.0), bar_at(a, "SINK", 1, 111.0, revision=1)], {})
    world.writer.write(BARS, [bar_at(a, "SINK", 1, 999.0, revision=0), bar_at(b, "SINK", 0, 8.0, revision=2)], {})
    end = T0.replace(hour=16)
    got = query.bars(reader_url(world.settings), a, symbol="sink", timeframe="1m", start=T0, end=end)
    assert [(r[0], r[7], r[11]) for r in got.rows] == [
        (T0.replace(minute=0), 100.0, 0),
        (T0.replace(minute=1), 111.0, 1),
        (T0.replace(minute=2), 102.0, 0),
    ]
    got_b = query.bars(reader_url(world.settings), "b", symbol="SINK", timeframe="1m", start=T0, end=end)
    assert [(r[0], r[2], r[7], r[11]) for r in got_b.rows] == [(T0, "SINK", 8.0, 2)]
    prices = query.latest_prices(reader_url(world.settings), a, ["SINK"])
    assert [(r[0], r[1], r[2], r[5], r[6]) for r in prices.rows] == [
        ("polygon", "SINK", 102.0, T0.replace(minute=2), "bar")
    ]


@pytest.mark.parametrize("table", sorted(INSERTS))
def test_a_row_of_another_tenant_is_rejected_as_poison(world: World, table: str) -> None:
    sql, params = INSERTS[table]
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security") as raised:
        world.as_role(world.writer_url, world.a, sql, params(world.b))
    # The sink dead-letters it (a bad record), it does not retry it or stop.
    assert classify(raised.value) is ErrorClass.POISON
    landed = "idempotency_key = 'k'" if table == "jobs" else "symbol = 'SNEAK'"
    for tenant in (world.a, world.b):
        found = world.rows(
            reader_url(world.settings), tenant, f"SELECT count(*) FROM tenant_view.{table} WHERE {landed}"
        )
        assert found == [(0,)]


def test_an_update_can_neither_move_a_row_nor_touch_another_tenants(world: World) -> None:
    a, b = world.a, world.b
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        world.as_role(world.writer_url, a, "UPDATE bars_minute SET tenant_id = %s WHERE symbol = 'AONLY'", (b,))
    touch = "UPDATE bars_minute SET close = 0 WHERE symbol = 'BONLY'"
    if world.mode == "rls":
        assert world.as_role(world.writer_url, a, touch).rowcount == 0  # the row is invisible
    else:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=re.escape("another tenant")):
            world.as_role(world.writer_url, a, touch)  # OLD.tenant_id is checked
    untouched = "SELECT symbol, close FROM tenant_view.bars_minute WHERE symbol = 'BONLY'"
    assert world.rows(reader_url(world.settings), b, untouched) == [("BONLY", 20.0)]


def test_the_reader_sees_only_its_tenant(world: World) -> None:
    url = reader_url(world.settings)
    seen = world.rows(url, world.a, "SELECT tenant_id::text, symbol FROM tenant_view.bars WHERE symbol LIKE '_ONLY'")
    assert seen == [(world.a, "AONLY")]
    for table in TENANT_TABLES:
        other = world.rows(url, world.a, f"SELECT count(*) FROM tenant_view.{table} WHERE tenant_id <> %s", (world.a,))
        assert other == [(0,)], table
    if world.mode == "rls":
        assert world.rows(url, world.a, "SELECT symbol FROM bars_minute WHERE symbol LIKE '_ONLY'") == [("AONLY",)]
    else:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            world.rows(url, world.a, "SELECT symbol FROM bars_minute")


def test_without_a_tenant_context_nothing_is_visible_or_writable(world: World) -> None:
    url = reader_url(world.settings)
    for table in TENANT_TABLES:
        assert world.rows(url, None, f"SELECT count(*) FROM tenant_view.{table}") == [(0,)], table
        assert world.rows(world.writer_url, None, f"SELECT count(*) FROM tenant_view.{table}") == [(0,)], table
    if world.mode == "rls":
        assert world.rows(url, None, "SELECT count(*) FROM bars_minute") == [(0,)]
    for table in ("bars_minute", "quotes", "latest_prices"):
        sql, params = INSERTS[table]
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            world.as_role(world.writer_url, None, sql, params(world.a))


def test_the_writers_reads_of_a_guarded_table_are_not_filtered(world: World) -> None:
    """The trade-off of guard mode (docs/timescaledb.md): ON CONFLICT needs SELECT on the table, and with
    row security off nothing filters it. Reads through tenant_view are filtered in both modes."""
    mine = "SELECT symbol FROM bars_minute WHERE symbol LIKE '_ONLY' ORDER BY symbol"
    expected = [("AONLY",)] if world.mode == "rls" else [("AONLY",), ("BONLY",)]
    assert world.rows(world.writer_url, world.a, mine) == expected
    view = mine.replace("FROM bars_minute", "FROM tenant_view.bars_minute")
    assert world.rows(world.writer_url, world.a, view) == [("AONLY",)]


def through_views(sql: FlushSql) -> str:
    """The sink's upsert, writing `tenant_view.<table>` instead of the tables."""
    return re.sub(r"INSERT INTO (\w+) AS", r"INSERT INTO tenant_view.\1 AS", sql.upsert)


def test_the_sinks_upsert_also_works_through_the_views(world: World) -> None:
    """What would let the writer do without any privilege on the tables (docs/timescaledb.md)."""
    sql = flush_sql(BARS)
    upsert = through_views(sql)
    assert upsert.count("INSERT INTO tenant_view.") == 4  # three bar tables and latest_prices
    a, b = world.a, world.b
    batches = [
        [bar_at(a, "VIEW", 0, 1.0), bar_at(a, "VIEW", 1, 2.0), bar_at(b, "VIEW", 0, 3.0)],
        [bar_at(a, "VIEW", 0, 1.5, revision=1)],  # a correction
        [bar_at(a, "VIEW", 0, 9.0, revision=0)],  # a late, older revision: changes nothing
    ]
    with psycopg.connect(world.writer_url) as conn:
        conn.execute(sql.create_stage)
        for rows in batches:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(sql.copy) as copy:
                    if sql.binary_types is not None:  # as the writer stages: binary COPY needs the types
                        copy.set_types(list(sql.binary_types))
                    for row in rows:
                        copy.write_row(row)
                # One tenant per context; B's staged row is filtered out under A's, as in the sink.
                cur.execute(SET_TENANT, (a,))
                cur.execute(upsert, {"tenant": a})
    got = world.rows(
        reader_url(world.settings), a, "SELECT ts, close, revision FROM tenant_view.bars WHERE symbol = 'VIEW'"
    )
    assert sorted(got) == [(T0, 1.5, 1), (T0.replace(minute=1), 2.0, 0)]
    assert world.rows(reader_url(world.settings), b, "SELECT count(*) FROM tenant_view.bars WHERE symbol = 'VIEW'") == [
        (0,)
    ]
    # Row security (rls) or the trigger (guard) refuses first, with the same 42501 as on the table.
    into_view = INSERTS["bars_minute"][0].replace("bars_minute", "tenant_view.bars_minute")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        world.as_role(world.writer_url, a, into_view, (T0, b, "X"))
