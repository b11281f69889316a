"""Tenant isolation in both modes, `rls` and `guard`, against each role as an attacker would use it.

Guard mode needs no TimescaleDB (a trigger and views), so it runs here on plain PostgreSQL; each
mode gets its own throwaway database, with every tenant table in that mode. The roles:

- tenant reader: a login role bound to tenant A (`admin tenants reader create`); sees A, whatever it sets;
- gateway reader: the shared reader, trusted to choose its tenant with app.tenant_id (documented as such);
  it also selects the plain tables under row security, filtered by the same rule as the views;
- writer: the sink; a multi-tenant service credential: it writes the tenant it sets, and nothing else;
- owner: owns the schema, and with it every row (documented); only the gateway reader holds a
  privilege on a table (SELECT, where row security filters it).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from mds_sink.config.settings import Settings, load_settings
from mds_sink.control import query, tenants
from mds_sink.core.catalog import TENANT_TABLES
from mds_sink.core.tables import BARS
from mds_sink.db import migrate
from mds_sink.db.classify import classify
from mds_sink.db.preflight import check_database
from mds_sink.db.sql import SET_TENANT, flush_sql
from mds_sink.db.writer import Writer, open_pool
from mds_sink.errors import ErrorClass, QueryError
from tests.control import MINUTE, T0, bar_row, writer_pool
from tests.throwaway import migrated, owner_url, reader_url, switch_to_guard, with_user

RELATIONS = (*TENANT_TABLES, "bars")


def bar_at(tenant: str, symbol: str, minute: int, close: float, revision: int = 0) -> tuple[Any, ...]:
    return bar_row(tenant, symbol, T0 + minute * MINUTE, close, revision=revision)


def roles_url() -> str:
    return os.environ["MDS_SINK_DATABASE__ROLES_URL"]


@dataclass
class World:
    mode: str
    settings: Settings
    a: str
    b: str
    writer: Writer
    reader_a: tenants.Credential  # tenant A's own reader
    reader_b: tenants.Credential

    @property
    def writer_url(self) -> str:
        return self.settings.database.url.get_secret_value()

    @property
    def gateway_url(self) -> str:
        return reader_url(self.settings)

    def url_of(self, cred: tenants.Credential) -> str:
        return with_user(owner_url(self.settings), cred.role, cred.password)

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
        made: list[str] = []
        pool = writer_pool(s)
        try:
            reader_a = tenants.create_reader(owner_url(s), roles_url(), "a")
            made.append(reader_a.role)
            reader_b = tenants.create_reader(owner_url(s), roles_url(), b)
            made.append(reader_b.role)
            writer = Writer(pool, "isolation-test")
            writer.write(BARS, [bar_at(a, "AONLY", 0, 10.0), bar_at(b, "BONLY", 0, 20.0)], {})
            yield World(request.param, s, a, b, writer, reader_a, reader_b)
        finally:
            pool.close()
            for role in made:  # roles outlive the database: never leave one behind
                tenants.drop_reader(owner_url(s), roles_url(), role)


BAR_INSERT = (
    "INSERT INTO {rel} (ts, tenant_id, vendor, symbol, timeframe, open, high, low, close, volume) "
    "VALUES (%s, %s, 'v', %s, '1m', 1, 1, 1, 1, 1)"
)
INSERTS: dict[str, tuple[str, Callable[[str], tuple[Any, ...]]]] = {
    "bars_minute": (BAR_INSERT.format(rel="{rel}"), lambda t: (T0, t, "SNEAK")),
    "bars_day": (BAR_INSERT.format(rel="{rel}").replace("'1m'", "'1d'"), lambda t: (T0, t, "SNEAK")),
    "quotes": (
        "INSERT INTO {rel} (ts, tenant_id, vendor, symbol, bid, ask, bid_size, ask_size) "
        "VALUES (%s, %s, 'v', 'SNEAK', 1, 1, 1, 1)",
        lambda t: (T0, t),
    ),
    "latest_prices": (
        "INSERT INTO {rel} (tenant_id, vendor, symbol, price, ts, source) VALUES (%s, 'v', 'SNEAK', 1, %s, 'bar')",
        lambda t: (t, T0),
    ),
    "jobs": (
        "INSERT INTO {rel} (tenant_id, idempotency_key, job_type, requested_at) VALUES (%s, 'k', 'backfill', %s)",
        lambda t: (t, T0),
    ),
}


def into(table: str, schema: str) -> str:
    return INSERTS[table][0].format(rel=f"{schema}.{table}")


# -- the sink, as it runs -----------------------------------------------------------------------------
def test_the_sink_starts_in_this_mode(world: World) -> None:
    pool = open_pool(world.writer_url, min_size=0, max_size=1, connect_timeout_s=5, statement_timeout_ms=30_000)
    try:
        assert check_database(world.settings, pool) == migrate.head_revision(world.settings)
    finally:
        pool.close()


def test_the_sinks_sessions_write_and_correct_each_tenant_through_the_views(world: World) -> None:
    assert flush_sql(BARS).upsert.count("INSERT INTO tenant_view.") == 4  # three bar tables and latest_prices
    a, b = world.a, world.b
    world.writer.write(BARS, [bar_at(a, "SINK", m, 100.0 + m) for m in range(3)] + [bar_at(b, "SINK", 0, 7.0)], {})
    # A replay changes nothing; a correction (higher revision) replaces; an older revision does not.
    world.writer.write(BARS, [bar_at(a, "SINK", 0, 100.0), bar_at(a, "SINK", 1, 111.0, revision=1)], {})
    world.writer.write(BARS, [bar_at(a, "SINK", 1, 999.0, revision=0), bar_at(b, "SINK", 0, 8.0, revision=2)], {})
    end = T0.replace(hour=16)
    # Each tenant's own credential, no --tenant: the database picks the tenant.
    got = query.bars(world.url_of(world.reader_a), None, symbol="sink", timeframe="1m", start=T0, end=end)
    assert [(r[0], r[7], r[11]) for r in got.rows] == [
        (T0.replace(minute=0), 100.0, 0),
        (T0.replace(minute=1), 111.0, 1),
        (T0.replace(minute=2), 102.0, 0),
    ]
    got_b = query.bars(world.url_of(world.reader_b), None, symbol="SINK", timeframe="1m", start=T0, end=end)
    assert [(r[0], r[2], r[7], r[11]) for r in got_b.rows] == [(T0, "SINK", 8.0, 2)]
    # The gateway names the tenant (by name or id).
    via_gateway = query.bars(world.gateway_url, "b", symbol="SINK", timeframe="1m", start=T0, end=end)
    assert via_gateway.rows == got_b.rows
    prices = query.latest_prices(world.url_of(world.reader_a), a, ["SINK"])
    assert [(r[0], r[1], r[2], r[5], r[6]) for r in prices.rows] == [
        ("polygon", "SINK", 102.0, T0.replace(minute=2), "bar")
    ]


def test_query_refuses_another_tenant_with_a_tenant_credential_and_no_tenant_with_the_gateway(world: World) -> None:
    role = world.reader_a.role
    with pytest.raises(QueryError, match=f"^role {role} reads tenant {world.a} only: omit --tenant"):
        query.latest_prices(world.url_of(world.reader_a), world.b, ["AONLY"])
    with pytest.raises(QueryError, match=f"^role {role} reads tenant {world.a} only"):
        query.latest_prices(world.url_of(world.reader_a), "b", ["AONLY"])
    with pytest.raises(QueryError, match=r"^role mds_reader is a gateway reader: --tenant is required$"):
        query.latest_prices(world.gateway_url, None, ["AONLY"])


# -- tenant reader -------------------------------------------------------------------------------------
def test_a_tenant_reader_sees_its_tenant_whatever_it_sets(world: World) -> None:
    url = world.url_of(world.reader_a)
    probe = "SELECT tenant_id::text, symbol FROM tenant_view.bars WHERE symbol LIKE '_ONLY'"
    for context in (None, world.a, world.b, ""):
        assert world.rows(url, context, probe) == [(world.a, "AONLY")], context
    # A session-wide setting, not just a transaction-local one, changes nothing either.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (world.b,))
        assert conn.execute(probe).fetchall() == [(world.a, "AONLY")]
        for table in TENANT_TABLES:
            other = conn.execute(f"SELECT count(*) FROM tenant_view.{table} WHERE tenant_id <> %s", (world.a,))
            assert other.fetchall() == [(0,)], table


@pytest.mark.parametrize("relation", [*RELATIONS, "tenants", "tenant_readers", "tenant_context_roles", "sink_offsets"])
def test_a_tenant_reader_may_select_no_table(world: World, relation: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match=f"permission denied for (table|view) {relation}"):
        world.rows(world.url_of(world.reader_a), world.b, f"SELECT * FROM public.{relation}")


def test_a_tenant_reader_cannot_become_another_role_nor_learn_another_tenant(world: World) -> None:
    url = world.url_of(world.reader_a)
    for other in (world.reader_b.role, "mds_reader", "mds_writer", "mds_owner"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=f'permission denied to set role "{other}"'):
            world.rows(url, None, f'SET ROLE "{other}"')
    # The binding of another role is not told to a session that cannot act as it.
    assert world.rows(url, None, "SELECT tenant_view.bound_tenant(%s)", (world.reader_b.role,)) == [(None,)]
    assert world.rows(url, None, "SELECT tenant_view.bound_tenant(current_user)::text") == [(world.a,)]
    assert world.rows(url, None, "SELECT tenant_view.chooses_tenant('mds_reader')") == [(False,)]
    # Role names say nothing of the tenant; the only tenant id it can find is its own.
    names = {r[0] for r in world.rows(url, None, "SELECT rolname FROM pg_roles")}
    assert not any(world.b in n or world.a in n for n in names)


def test_a_tenant_reader_writes_nothing(world: World) -> None:
    for table in ("bars_minute", "latest_prices"):
        for schema in ("public", "tenant_view"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                world.as_role(world.url_of(world.reader_a), world.a, into(table, schema), INSERTS[table][1](world.a))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for schema public"):
        world.as_role(
            world.url_of(world.reader_a), None, "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'"
        )


# -- gateway reader ------------------------------------------------------------------------------------
def test_the_gateway_reads_the_tenant_it_names_and_nothing_without_one(world: World) -> None:
    url = world.gateway_url
    probe = "SELECT tenant_id::text, symbol FROM tenant_view.bars WHERE symbol LIKE '_ONLY'"
    assert world.rows(url, world.a, probe) == [(world.a, "AONLY")]
    assert world.rows(url, world.b, probe) == [(world.b, "BONLY")]  # trusted: the documented gateway
    for table in TENANT_TABLES:
        assert world.rows(url, None, f"SELECT count(*) FROM tenant_view.{table}") == [(0,)], table
    # The tables themselves: under rls filtered by the same rule as the views; guarded ones not at all.
    for relation in RELATIONS:
        if world.mode == "rls":
            seen = world.rows(url, world.a, f"SELECT DISTINCT tenant_id::text FROM public.{relation}")
            assert seen in ([], [(world.a,)]), relation
            assert world.rows(url, None, f"SELECT count(*) FROM public.{relation}") == [(0,)], relation
        else:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table"):
                world.rows(url, world.a, f"SELECT count(*) FROM public.{relation}")


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("", None),
        ("not-a-uuid", psycopg.errors.InvalidTextRepresentation),
        ("{a},{b}", psycopg.errors.InvalidTextRepresentation),
        ("{a} {b}", psycopg.errors.InvalidTextRepresentation),
    ],
)
def test_a_bad_setting_shows_nothing_or_fails(world: World, setting: str, error: type[Exception] | None) -> None:
    value = setting.format(a=world.a, b=world.b)
    for url in (world.gateway_url, world.writer_url):
        if error is None:
            assert world.rows(url, value, "SELECT count(*) FROM tenant_view.bars") == [(0,)]
        else:
            with pytest.raises(error):
                world.rows(url, value, "SELECT count(*) FROM tenant_view.bars")


# -- writer --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("table", sorted(INSERTS))
def test_the_writer_cannot_write_a_row_of_another_tenant(world: World, table: str) -> None:
    sql, params = INSERTS[table]
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security") as raised:
        world.as_role(world.writer_url, world.a, sql.format(rel=f"tenant_view.{table}"), params(world.b))
    # The sink dead-letters it (a bad record), it does not retry it or stop.
    assert classify(raised.value) is ErrorClass.POISON
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match=f"permission denied for table {table}"):
        world.as_role(world.writer_url, world.a, sql.format(rel=f"public.{table}"), params(world.a))
    landed = "idempotency_key = 'k'" if table == "jobs" else "symbol = 'SNEAK'"
    for tenant in (world.a, world.b):
        found = world.rows(world.gateway_url, tenant, f"SELECT count(*) FROM tenant_view.{table} WHERE {landed}")
        assert found == [(0,)]


def test_an_update_can_neither_move_a_row_nor_touch_another_tenants(world: World) -> None:
    a, b = world.a, world.b
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        world.as_role(
            world.writer_url, a, "UPDATE tenant_view.bars_minute SET tenant_id = %s WHERE symbol = 'AONLY'", (b,)
        )
    # The view shows the writer A's rows only: B's row is not there to update.
    touch = "UPDATE tenant_view.bars_minute SET close = 0 WHERE symbol = 'BONLY'"
    assert world.as_role(world.writer_url, a, touch).rowcount == 0
    untouched = "SELECT symbol, close FROM tenant_view.bars_minute WHERE symbol = 'BONLY'"
    assert world.rows(world.gateway_url, b, untouched) == [("BONLY", 20.0)]


def test_the_writer_reads_only_the_tenant_it_set_and_no_table(world: World) -> None:
    mine = "SELECT symbol FROM tenant_view.bars_minute WHERE symbol LIKE '_ONLY' ORDER BY symbol"
    assert world.rows(world.writer_url, world.a, mine) == [("AONLY",)]
    assert world.rows(world.writer_url, None, mine) == []
    for relation in RELATIONS:
        with pytest.raises(
            psycopg.errors.InsufficientPrivilege, match=f"permission denied for (table|view) {relation}"
        ):
            world.rows(world.writer_url, world.a, f"SELECT * FROM public.{relation}")


def test_the_writer_can_delete_truncate_copy_or_create_nothing(world: World) -> None:
    for statement, error in (
        ("DELETE FROM tenant_view.bars_minute", "permission denied for view bars_minute"),
        ("DELETE FROM public.bars_minute", "permission denied for table bars_minute"),
        ("TRUNCATE public.bars_minute", "permission denied for table bars_minute"),
        ("CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "permission denied for schema public"),
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=re.escape(error)):
            world.as_role(world.writer_url, world.a, statement)
    for target, refused, message in (
        ("public", psycopg.errors.InsufficientPrivilege, "permission denied for table latest_prices"),
        ("tenant_view", psycopg.errors.WrongObjectType, 'cannot copy to view "latest_prices"'),
    ):
        with (
            psycopg.connect(world.writer_url) as conn,
            conn.transaction(),
            conn.cursor() as cur,
            pytest.raises(refused, match=re.escape(message)),
            cur.copy(f"COPY {target}.latest_prices (tenant_id) FROM STDIN") as copy,
        ):
            copy.write_row((world.b,))


def test_a_leaked_writer_credential_writes_the_tenant_it_names(world: World) -> None:
    """The writer is a multi-tenant service credential (docs/tenant-security.md): naming B, it writes B's
    latest price. What limits it is the network, rotation and audit, not the database."""
    upsert = (
        "INSERT INTO tenant_view.latest_prices AS lp (tenant_id, vendor, symbol, price, ts, source) "
        "VALUES (%s, 'v', 'LEAK', 1, %s, 'bar') ON CONFLICT (tenant_id, vendor, symbol) DO UPDATE SET price = 2"
    )
    world.as_role(world.writer_url, world.b, upsert, (world.b, T0))
    assert world.rows(world.gateway_url, world.b, "SELECT price FROM tenant_view.latest_prices WHERE symbol = 'LEAK'")
    assert (
        world.rows(world.url_of(world.reader_a), None, "SELECT 1 FROM tenant_view.latest_prices WHERE symbol = 'LEAK'")
        == []
    )


# -- owner ---------------------------------------------------------------------------------------------
def test_only_the_owner_writes_and_only_the_gateway_selects_the_tenant_tables(world: World) -> None:
    with psycopg.connect(owner_url(world.settings)) as conn:
        grantees = conn.execute(
            "SELECT c.relname, pg_get_userbyid(a.grantee), a.privilege_type, c.relrowsecurity "
            "FROM pg_class c, aclexplode(c.relacl) a WHERE c.relnamespace = 'public'::regnamespace "
            "AND c.relname = ANY(%s) AND a.grantee <> c.relowner ORDER BY 1",
            (list(RELATIONS),),
        ).fetchall()
        if world.mode == "rls":
            assert grantees == [(r, "mds_reader", "SELECT", r != "bars") for r in sorted(RELATIONS)]
        else:  # `bars` is security_invoker: it fails on the guarded tables beneath it
            assert grantees == [("bars", "mds_reader", "SELECT", False)]
        # The owner is trusted with the context too (retention, migrations run tenant by tenant).
        assert conn.execute("SELECT tenant_view.chooses_tenant(current_user)").fetchone() == (True,)


def test_removing_the_gateway_leaves_the_shared_reader_nothing(world: World) -> None:
    probe = "SELECT count(*) FROM tenant_view.bars WHERE symbol LIKE '_ONLY'"
    assert tenants.remove_gateway(owner_url(world.settings), "mds_reader")
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=r"permission denied for (view|schema)"):
            world.rows(world.gateway_url, world.a, probe)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table tenants"):
            world.rows(world.gateway_url, None, "SELECT count(*) FROM tenants")
        with pytest.raises(QueryError, match="neither a tenant reader nor a gateway reader"):
            query.latest_prices(world.gateway_url, world.a, ["AONLY"])
    finally:
        tenants.add_gateway(owner_url(world.settings), "mds_reader")
    assert world.rows(world.gateway_url, world.a, probe) == [(1,)]


def test_a_dropped_reader_is_unbound_and_gone(world: World) -> None:
    cred = tenants.create_reader(owner_url(world.settings), roles_url(), "a")
    url = world.url_of(cred)
    assert world.rows(url, None, "SELECT symbol FROM tenant_view.bars WHERE symbol LIKE '_ONLY'") == [("AONLY",)]
    rotated = tenants.rotate_reader(owner_url(world.settings), roles_url(), cred.role)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url).close()
    probe = "SELECT count(*) FROM tenant_view.bars WHERE symbol LIKE '_ONLY'"
    assert world.rows(world.url_of(rotated), None, probe) == [(1,)]
    tenants.drop_reader(owner_url(world.settings), roles_url(), cred.role)
    with pytest.raises(psycopg.OperationalError, match=f'role "{cred.role}" does not exist|password authentication'):
        psycopg.connect(world.url_of(rotated)).close()
