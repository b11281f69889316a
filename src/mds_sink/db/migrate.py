"""Alembic, driven from `mds-sink admin`: one advisory lock serialises concurrent runs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mds_sink.config.resources import resource_dir
from mds_sink.config.settings import Settings
from mds_sink.errors import MigrationError

# Alembic and SQLAlchemy take a quarter of a second to import: only the commands that migrate load them.
if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

# pg_advisory_lock key: "mds-sink migrations" as a fixed 63-bit number, so concurrent runs queue.
MIGRATION_LOCK_KEY = 0x6D64_732D_6D69_6772


def _sqlalchemy_url(settings: Settings) -> str:
    url = settings.database.require_owner_url()
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def alembic_config(settings: Settings) -> Config:
    from alembic.config import Config  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(resource_dir("migrations")))
    config.attributes["writer_role"] = settings.database.writer_role
    config.attributes["reader_role"] = settings.database.reader_role
    return config


def head_revision(settings: Settings) -> str | None:
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    return ScriptDirectory.from_config(alembic_config(settings)).get_current_head()


@contextmanager
def _locked_connection(settings: Settings) -> Iterator[Connection]:
    from sqlalchemy import create_engine, text  # noqa: PLC0415

    engine = create_engine(_sqlalchemy_url(settings), poolclass=None)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


def _run(settings: Settings, action: Callable[[Config], None]) -> None:
    from alembic.util.exc import CommandError  # noqa: PLC0415

    with _locked_connection(settings) as conn:
        config = alembic_config(settings)
        config.attributes["connection"] = conn
        try:
            action(config)
        except CommandError as exc:  # an unknown or ambiguous revision: nothing ran
            raise MigrationError(f"{exc}; `mds-sink admin history` lists the revisions") from None
        conn.commit()


def undone_by_downgrade(settings: Settings, current: str | None, target: str) -> list[tuple[str, str]]:
    """(revision, message) of each migration a downgrade from `current` to `target` undoes, newest first."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415
    from alembic.script.revision import RevisionError  # noqa: PLC0415

    if current is None:
        return []
    script = ScriptDirectory.from_config(alembic_config(settings))
    try:
        steps = list(script.iterate_revisions(current, "base" if target == "base" else target))
    except RevisionError as exc:
        raise MigrationError(f"{exc}; `mds-sink admin history` lists the revisions") from None
    return [(str(r.revision), (r.doc or "").rstrip(".")) for r in steps if r.revision != target]


def table_rows(settings: Settings) -> dict[str, int | None]:
    """Rows of every table of the schema, exactly; None where counting took over 10 s."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    counts: dict[str, int | None] = {}
    with psycopg.connect(settings.database.require_owner_url(), autocommit=True) as conn:
        conn.execute("SET statement_timeout = '10s'")
        names = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') "
            "AND relname <> 'alembic_version' ORDER BY relname"
        ).fetchall()
        for (name,) in names:
            try:
                row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()
                counts[name] = None if row is None else int(row[0])
            except psycopg.errors.QueryCanceled:
                counts[name] = None
    return counts


def upgrade(settings: Settings, revision: str = "head") -> None:
    from alembic import command  # noqa: PLC0415

    _run(settings, lambda c: command.upgrade(c, revision))


def downgrade(settings: Settings, revision: str) -> None:
    from alembic import command  # noqa: PLC0415

    _run(settings, lambda c: command.downgrade(c, revision))


def stamp(settings: Settings, revision: str) -> None:
    from alembic import command  # noqa: PLC0415

    _run(settings, lambda c: command.stamp(c, revision))


def current_revision(settings: Settings) -> str | None:
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415
    from sqlalchemy import create_engine  # noqa: PLC0415

    engine = create_engine(_sqlalchemy_url(settings))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def history(settings: Settings) -> list[tuple[str, str | None, str]]:
    """(revision, down revision, message) from oldest to newest."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    script = ScriptDirectory.from_config(alembic_config(settings))
    revisions = list(script.walk_revisions())
    return [
        (str(r.revision), r.down_revision if isinstance(r.down_revision, str) else None, r.doc or "")
        for r in reversed(revisions)
    ]
