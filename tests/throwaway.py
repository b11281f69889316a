"""Throwaway databases for tests that change a whole schema (migrations, isolation modes, policies).

Each is created empty, owned by the owner role, reachable by the writer and reader roles, and
dropped afterwards; the shared `mds` database is never touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from mds_sink.config.settings import Settings, load_settings
from mds_sink.control import isolation, policy_db
from mds_sink.core.catalog import TENANT_TABLES
from mds_sink.db import migrate


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def database_settings(base: Settings, name: str, **overrides: Any) -> Settings:
    """`base` pointed at database `name` (same roles, same server)."""
    urls = {
        key: with_database(secret.get_secret_value(), name)
        for key, secret in (
            ("url", base.database.url),
            ("owner_url", base.database.owner_url),
            ("reader_url", base.database.reader_url),
        )
        if secret is not None
    }
    return load_settings(database=urls, **overrides)


@contextmanager
def throwaway_database(
    create_url: str,
    *,
    owner: str = "mds_owner",
    users: tuple[str, ...] = ("mds_writer", "mds_reader"),
    timescaledb: bool = False,
) -> Iterator[str]:
    """A new empty database; `create_url` is a role that may create it (the owner, or a superuser).

    As deploy/local/pg/bootstrap.sql sets up `mds`: the owner owns it, the sink's roles may connect.
    """
    name = f"mds_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(create_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE {name} OWNER "{owner}"')
        conn.execute(f"REVOKE ALL ON DATABASE {name} FROM PUBLIC")
        roles = ", ".join(f'"{u}"' for u in users)
        conn.execute(f"GRANT CONNECT ON DATABASE {name} TO {roles}")
    if timescaledb:  # creating the extension needs a superuser: `create_url` is one here
        with psycopg.connect(with_database(create_url, name), autocommit=True) as conn:
            conn.execute("SET client_min_messages = warning")
            conn.execute("CREATE EXTENSION timescaledb")
    try:
        yield name
    finally:
        # The superuser of the local stack can end sessions a failed test left behind; the owner cannot.
        drop_url = os.environ.get("MDS_STACK_PG_SUPERUSER_URL") if not timescaledb else None
        with psycopg.connect(drop_url or create_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def migrated(base: Settings, create_url: str, *, timescaledb: bool = False, **overrides: Any) -> Iterator[Settings]:
    """A throwaway database at head; yields settings pointing at it."""
    with throwaway_database(create_url, timescaledb=timescaledb) as name:
        settings = database_settings(base, name, **overrides)
        migrate.upgrade(settings)
        yield settings


def owner_url(s: Settings) -> str:
    assert s.database.owner_url is not None
    return s.database.owner_url.get_secret_value()


def reader_url(s: Settings) -> str:
    assert s.database.reader_url is not None
    return s.database.reader_url.get_secret_value()


def switch_to_guard(s: Settings) -> None:
    """Every tenant table to guard mode, each in one transaction, as `admin policies apply` switches one."""
    with psycopg.connect(owner_url(s)) as conn:
        state = policy_db.read_state(conn, reader=s.database.reader_role)
        for table in TENANT_TABLES:
            with conn.transaction():
                for statement in isolation.to_guard(table, state.tables[table].isolation, s.database.reader_role):
                    conn.execute(statement)
