"""TimescaleDB tests: a server with the extension, named by MDS_TEST_TIMESCALE_URL (a superuser).

They carry the `timescaledb` marker; CI deselects it (no registry ships TimescaleDB). Without the
variable they fail, saying so: a run that asked for them must not pass by skipping them.
The roles are set up as deploy/local/pg/bootstrap.sql does (created if missing, passwords reset to
the local stack's), so point the variable at a throwaway server. See docs/timescaledb.md.
"""

from __future__ import annotations

import os

import psycopg
import pytest

from mds_sink.settings import Settings, load_settings
from tests.throwaway import with_database, with_user

ENV = "MDS_TEST_TIMESCALE_URL"

ROLES_SQL = """
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mds_owner') THEN CREATE ROLE mds_owner; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mds_writer') THEN CREATE ROLE mds_writer; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mds_reader') THEN CREATE ROLE mds_reader; END IF;
END
$$;
ALTER ROLE mds_owner  LOGIN PASSWORD 'mds_owner'  NOSUPERUSER NOBYPASSRLS CREATEDB   NOCREATEROLE NOREPLICATION;
ALTER ROLE mds_writer LOGIN PASSWORD 'mds_writer' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION;
ALTER ROLE mds_reader LOGIN PASSWORD 'mds_reader' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION;
"""


@pytest.fixture(scope="session")
def superuser_url() -> str:
    url = os.environ.get(ENV)
    if not url:
        pytest.fail(
            f"{ENV} is not set: the timescaledb tests need a PostgreSQL server with the timescaledb extension "
            "preloaded, e.g. postgresql://postgres:PASSWORD@127.0.0.1:5432/postgres (see docs/timescaledb.md); "
            'run the others with -m "not timescaledb"'
        )
    with psycopg.connect(url, autocommit=True) as conn:
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        if superuser != (True,):
            pytest.fail(f"{ENV} must name a superuser: creating the timescaledb extension needs one")
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
        if preload is None or "timescaledb" not in str(preload[0]):
            pytest.fail(f"the server at {ENV} does not preload timescaledb (shared_preload_libraries)")
        conn.execute("SET client_min_messages = warning")
        conn.execute(ROLES_SQL)
    return url


@pytest.fixture(scope="session")
def timescale_base(superuser_url: str) -> Settings:
    """Settings for the roles on that server; `database_settings` points them at a throwaway database."""
    postgres = with_database(superuser_url, "postgres")
    return load_settings(
        database={
            "url": with_user(postgres, "mds_writer", "mds_writer"),
            "owner_url": with_user(postgres, "mds_owner", "mds_owner"),
            "reader_url": with_user(postgres, "mds_reader", "mds_reader"),
        }
    )
