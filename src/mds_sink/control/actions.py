"""The control plane's schema and policy actions as the control API runs them, each with the owner's
credentials and the same control functions `mds-sink admin` calls (db.migrate, policy_db, retention).

Each returns a JSON-able result or raises MdsSinkError with one line; input errors are QueryError.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg

from mds_sink.config.settings import Settings
from mds_sink.control import aggregates, policies, policy_db, retention
from mds_sink.db import migrate
from mds_sink.db.dsn import unreachable
from mds_sink.errors import QueryError, StartupError, first_line


@contextmanager
def owner_connection(
    settings: Settings, *, lock: bool = False, purpose: str = "for the control API"
) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit owner connection (holding the policy lock if asked); StartupError naming the
    address if the database does not answer, SettingsError if database.owner_url is not set."""
    url = settings.database.require_owner_url(purpose)
    try:
        manager = policy_db.policy_lock(url) if lock else psycopg.connect(url, autocommit=True)
        with manager as conn:
            yield conn
    except psycopg.OperationalError as exc:
        reason = unreachable(url, exc)
        if reason is not None:
            raise StartupError(reason) from None
        raise


# -- schema ---------------------------------------------------------------------------------------
def schema_version(settings: Settings) -> dict[str, Any]:
    """The database's revision, the code's head, and the revisions between them, oldest first."""
    order = [rev for rev, _down, _doc in migrate.history(settings)]
    current = migrate.current_revision(settings)
    head = migrate.head_revision(settings)
    at = order.index(current) + 1 if current in order else 0
    return {"current": current, "head": head, "pending": order[at:] if current != head else []}


def check_target(settings: Settings, to: str, *, allow_downgrade: bool) -> tuple[str, str]:
    """("upgrade" or "downgrade", revision) for a request; QueryError for an unknown revision or a
    downgrade not asked for explicitly."""
    order = [rev for rev, _down, _doc in migrate.history(settings)]
    if to not in {"head", "base", *order}:
        raise QueryError(f"unknown revision {to!r}; known: head, base, {', '.join(order)}")
    current = migrate.current_revision(settings)
    at = order.index(current) if current in order else -1
    target = len(order) - 1 if to == "head" else (-1 if to == "base" else order.index(to))
    if target < at:
        if not allow_downgrade:
            raise QueryError(
                f"{to} is older than the database's revision {current}: that is a downgrade, which drops what "
                "the newer revisions added; ask for it explicitly with allow_downgrade"
            )
        return "downgrade", to
    return "upgrade", to


def move_schema(settings: Settings, direction: str, to: str) -> dict[str, Any]:
    """Upgrade or downgrade under the migrations' advisory lock (concurrent runs wait for each other):
    the revision the database is at afterwards. (What it was before is not reported: read outside the
    lock, it would be what a run queued behind another saw, not what it found.)"""
    if direction == "downgrade":
        migrate.downgrade(settings, to)
    else:
        migrate.upgrade(settings, to)
    return {"revision": migrate.current_revision(settings)}


# -- policies, retention, aggregates --------------------------------------------------------------
def apply_policies(settings: Settings) -> dict[str, Any]:
    """`admin policies apply`: hypertables, compression, retention policies, aggregates, isolation modes."""
    applied: list[dict[str, str]] = []
    with owner_connection(settings, lock=True) as conn:
        state = policy_db.read_state(conn, reader=settings.database.reader_role)
        plan = policies.plan(state, settings.policies, reader=settings.database.reader_role)
        try:
            policy_db.apply_plan(
                conn,
                plan,
                lock_timeout_s=settings.policies.lock_timeout_s,
                done=lambda c: applied.append({"target": c.target, "change": c.what}),
            )
        except psycopg.errors.LockNotAvailable:
            raise StartupError(
                f"a table stayed locked for {settings.policies.lock_timeout_s:g}s (policies.lock_timeout_s): "
                f"nothing of that table changed; {len(applied)} changes before it are committed; run again"
            ) from None
        except psycopg.Error as exc:
            raise StartupError(
                f"{first_line(exc)}: the changes of that table were rolled back "
                f"({len(applied)} before it are committed)"
            ) from None
    return {"changes": applied, "notes": list(plan.notes)}


def apply_retention(settings: Settings) -> dict[str, Any]:
    """`admin retention apply`: rows older than each table's keep removed now."""
    with owner_connection(settings) as conn:
        state = policy_db.read_state(conn, reader=settings.database.reader_role)
        hypertables = None if state.timescaledb is None else {t.name for t in state.tables.values() if t.hypertable}
        tasks = retention.retention_tasks(settings.policies, hypertables)
        results = retention.run_retention(
            conn, tasks, batch_rows=settings.policies.retention_batch_rows, done=lambda _r: None
        )
    kept = sorted(set(settings.policies.tables()) - {t.table for t in tasks})
    return {
        "tables": [
            {
                "table": r.task.table,
                "method": r.task.method,
                "keep": str(r.task.keep),
                "cutoff": r.cutoff.isoformat(),
                "removed": r.removed,
                "described": r.describe(),
            }
            for r in results
        ],
        "kept_forever": kept,
    }


def refresh_aggregates(settings: Settings, start: datetime, end: datetime, only: list[str] | None) -> dict[str, Any]:
    """`admin aggregates refresh`: the continuous aggregates materialized over [start, end)."""
    names = [a.name for a in aggregates.AGGREGATES]
    unknown = [n for n in only or () if n not in names]
    if unknown:
        raise QueryError(f"aggregate {unknown[0]!r}: expected one of {', '.join(names)}")
    if end <= start:
        raise QueryError("'to' must be after 'from'")
    with owner_connection(settings) as conn:
        state = policy_db.read_state(conn, reader=settings.database.reader_role)
        wanted = [n for n in names if not only or n in only]
        missing = [n for n in wanted if n not in state.aggregates]
        if missing:
            raise QueryError(f"{', '.join(missing)} do not exist yet: POST /policies/apply creates them")
        plain = [n for n in wanted if state.aggregates[n].kind != "continuous"]
        continuous = [n for n in wanted if n not in plain]
        refreshed: list[str] = []
        try:
            policy_db.refresh_aggregates(conn, continuous, start, end, refreshed.append)
        except psycopg.Error as exc:
            raise StartupError(f"refresh failed: {first_line(exc)}") from None
    return {
        "refreshed": refreshed,
        # Without TimescaleDB the aggregates are views computed when read: always current, nothing to do.
        "computed_when_read": plain,
        "window": {"from": start.isoformat(), "to": end.isoformat()},
    }
