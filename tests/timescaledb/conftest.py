"""TimescaleDB tests: a server with the extension, named by MDS_TEST_TIMESCALE_URL (a superuser).

They carry the `timescaledb` marker; CI deselects it (no registry ships TimescaleDB). Without the
variable they fail, saying so: a run that asked for them must not pass by skipping them.
The roles mds_owner, mds_writer and mds_reader are created if missing (as deploy/local/pg/bootstrap.sql
does); existing ones are left as they are. Their passwords come from MDS_PG_OWNER_PASSWORD,
MDS_PG_WRITER_PASSWORD and MDS_PG_READER_PASSWORD (the names docker-compose's .env uses), else the
local stack's. Every test database is a throwaway one, dropped afterwards. See docs/timescaledb.md.
"""

from __future__ import annotations

import os

import psycopg
import pytest
from psycopg import sql

from mds_sink.config.settings import Settings, load_settings
from tests.throwaway import with_database, with_user

ENV = "MDS_TEST_TIMESCALE_URL"

ROLES = {"owner": "mds_owner", "writer": "mds_writer", "reader": "mds_reader"}
CREATE_ROLE = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOBYPASSRLS")


def password(kind: str) -> str:
    return os.environ.get(f"MDS_PG_{kind.upper()}_PASSWORD", ROLES[kind])


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
        for kind, role in ROLES.items():
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                conn.execute(CREATE_ROLE.format(sql.Identifier(role), sql.Literal(password(kind))))
    return url


@pytest.fixture(scope="session")
def timescale_base(superuser_url: str) -> Settings:
    """Settings for the roles on that server; `database_settings` points them at a throwaway database."""
    postgres = with_database(superuser_url, "postgres")
    return load_settings(
        database={
            "url": with_user(postgres, ROLES["writer"], password("writer")),
            "owner_url": with_user(postgres, ROLES["owner"], password("owner")),
            "reader_url": with_user(postgres, ROLES["reader"], password("reader")),
        }
    )
