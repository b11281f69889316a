"""The benchmark's own database on the local server: created once, migrated, emptied before each run.

A database of its own, so a run can start from empty tables (TRUNCATE as the owner) without
touching the shared `mds` database the tests use.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg

from mds_sink.config.settings import Settings, load_settings
from mds_sink.db import migrate

NAME = "mds_bench"
SIDE_B = "mds_bench_b"  # the second sink's database in `--modes sidebyside`
# Everything the bars and quotes write, and the ledger: a run starts from none of it.
WRITTEN = ("bars_minute", "bars_hour", "bars_day", "quotes", "latest_prices", "bar_gaps", "sink_offsets")


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def urls(base: Settings, name: str = NAME) -> dict[str, str]:
    """The writer, owner and reader URLs of `base`, pointed at the bench database `name`."""
    found = {
        "url": base.database.url,
        "owner_url": base.database.owner_url,
        "reader_url": base.database.reader_url,
    }
    missing = [k for k, v in found.items() if v is None]
    if missing:
        raise SystemExit(f"the benchmark needs MDS_SINK_DATABASE__{missing[0].upper()} (deploy/local/stack.sh env)")
    return {k: with_database(v.get_secret_value(), name) for k, v in found.items() if v is not None}


def prepare(base: Settings, tenant_ids: list[str], name: str = NAME) -> Settings:
    """Create (first time), migrate to head and register the tenants; settings pointing at it."""
    owner = base.database.owner_url
    assert owner is not None  # urls() checked
    bench = urls(base, name)
    with psycopg.connect(owner.get_secret_value(), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {name}")
            conn.execute(f"REVOKE ALL ON DATABASE {name} FROM PUBLIC")
            conn.execute(
                f"GRANT CONNECT ON DATABASE {name} TO {base.database.writer_role}, {base.database.reader_role}"
            )
    with psycopg.connect(bench["owner_url"], autocommit=True) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    settings = load_settings(database=bench)
    migrate.upgrade(settings)
    with psycopg.connect(bench["owner_url"], autocommit=True) as conn:
        for n, tenant in enumerate(tenant_ids):
            conn.execute(
                "INSERT INTO tenants (tenant_id, name) VALUES (%s, %s) ON CONFLICT (tenant_id) DO NOTHING",
                (tenant, f"bench-{n}"),
            )
    return settings


def empty(settings: Settings) -> None:
    """No rows and no ledger: a fresh run (the owner may truncate; row security does not apply)."""
    assert settings.database.owner_url is not None
    with psycopg.connect(settings.database.owner_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(WRITTEN)}")
        # Planner statistics of the empty tables, as after a deployment: the run starts cold.
        conn.execute(f"ANALYZE {', '.join(WRITTEN)}")


def visible_rows(settings: Settings, tenant_ids: list[str]) -> dict[str, int]:
    """Rows per logical table as the reader sees them, tenant by tenant (row security applies)."""
    assert settings.database.reader_url is not None
    counts = {"bars": 0, "quotes": 0}
    with psycopg.connect(settings.database.reader_url.get_secret_value()) as conn:
        for tenant in tenant_ids:
            with conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
                for table in counts:
                    # Through tenant_view, as readers read: on TimescaleDB they have no right on hypertables.
                    row = conn.execute(f"SELECT count(*) FROM tenant_view.{table}").fetchone()
                    counts[table] += int(row[0]) if row else 0
    return counts


def server_settings(settings: Settings) -> dict[str, str]:
    """Durability settings of the server: the numbers mean little without them."""
    with psycopg.connect(settings.database.url.get_secret_value(), autocommit=True) as conn:
        return {
            name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in ("server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers")
        }


DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


@contextmanager
def durable(superuser_url: str) -> Iterator[None]:
    """The server made durable for the run (as users run it), then given back the settings it had:
    ALTER SYSTEM writes postgresql.auto.conf, which RESET empties again; all three are reloadable."""
    with psycopg.connect(superuser_url, autocommit=True) as conn:
        for name, value in DURABLE.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        conn.execute("SELECT pg_reload_conf()")
    _wait_for(superuser_url, "on")
    try:
        yield
    finally:
        with psycopg.connect(superuser_url, autocommit=True) as conn:
            for name in DURABLE:
                conn.execute(f"ALTER SYSTEM RESET {name}")
            conn.execute("SELECT pg_reload_conf()")


def _wait_for(url: str, fsync: str, timeout_s: float = 10.0) -> None:
    """A reload is signalled, not waited for: new sessions see it once the postmaster has read it."""
    deadline = time.monotonic() + timeout_s
    while True:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('fsync')").fetchone()
        if row is not None and row[0] == fsync:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the server did not take fsync={fsync} within {timeout_s:.0f} s")
        time.sleep(0.05)
